"""`_native.pyi` is kept in step with the native module: the same classes, functions and
members, by name (the stub is what type checkers and editors see of the binding)."""

import ast
from pathlib import Path

import latchkey
from latchkey import _native

STUB = Path(latchkey.__file__).with_name("_native.pyi")


def public(names):
    return {name for name in names if not name.startswith("_")}


def test_the_stub_names_exactly_what_the_native_module_has():
    tree = ast.parse(STUB.read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert public(dir(_native)) == public(classes) | public(functions)
    for name, node in classes.items():
        stubbed = {
            member.name
            for member in node.body
            if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef))
        } | {
            member.target.id
            for member in node.body
            if isinstance(member, ast.AnnAssign) and isinstance(member.target, ast.Name)
        }
        assert public(vars(getattr(_native, name))) == public(stubbed), name
