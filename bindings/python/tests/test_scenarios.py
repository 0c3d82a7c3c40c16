"""Every shared scenario in sdk-tests/scenarios/, through the Python binding."""

import json
import re
from pathlib import Path

import pytest

import latchkey

SCENARIOS = sorted((Path(__file__).resolve().parents[3] / "sdk-tests" / "scenarios").glob("*.json"))


def test_scenarios_are_found():
    assert len(SCENARIOS) >= 4


class Run:
    def __init__(self):
        self.eng = latchkey.Engine.memory(actor="scenario")
        self.stores = {}
        self.keys = {}  # name -> (key id, credential)
        self.entities = {}  # name -> entity id
        self.sessions = {}  # name -> portal session token

    def resolve(self, value):
        """`value` with every string "$name" replaced by the id of the entity saved as name."""
        if isinstance(value, str) and value.startswith("$"):
            return self.entities[value[1:]]
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    def token(self, step):
        return self.sessions[step["session"]] if "session" in step else step["token"]

    def step(self, step):
        op = step["op"]
        if op == "create_store":
            store, key = self.eng.create_store(step["name"], **step.get("settings", {}))
            self.stores[step["as"]] = store.id
            self.keys[step["as"] + ".default"] = (key.id, key.credential)
        elif op == "update_store":
            self.eng.update_store(self.stores[step["store"]], **step["patch"])
        elif op == "create_key":
            created = self.eng.create_key(self.stores[step["store"]], **step["input"])
            self.keys[step["as"]] = (created.id, created.credential)
        elif op == "update_key":
            self.eng.update_key(self.stores[step["store"]], self.keys[step["key"]][0], **step["patch"])
        elif op == "regenerate_key":
            key_id, old = self.keys[step["key"]]
            created = self.eng.regenerate_key(
                self.stores[step["store"]], key_id, overlap_seconds=step.get("overlap_seconds", 0)
            )
            if "old_as" in step:
                self.keys[step["old_as"]] = (key_id, old)
            self.keys[step["key"]] = (created.id, created.credential)
        elif op == "revoke_key":
            self.eng.revoke_key(self.stores[step["store"]], self.keys[step["key"]][0])
        elif op == "verify":
            self.verify(step)
        elif op == "create_entity":
            created = self.eng.create(self.stores[step["store"]], step["area"], self.resolve(step["input"]),
                                      environment=step.get("environment", "live"),
                                      idempotency_key=step.get("idempotency_key"))
            if "same_as" in step:
                assert created.id == self.entities[step["same_as"]], step
            assert created.replayed == ("same_as" in step), step
            if "as" in step:
                self.entities[step["as"]] = created.id
        elif op == "create_portal_session":
            session = self.eng.create_portal_session(
                self.stores[step["store"]], self.entities[step["customer"]],
                environment=step.get("environment", "live"), ttl_seconds=step.get("ttl_seconds"))
            self.sessions[step["as"]] = session.token
        elif op == "portal_customer":
            found = self.eng.portal_customer(self.token(step))
            wanted = None if step["expect"] is None else self.entities[step["expect"]]
            assert (found and found.customer_id) == wanted, step
        elif op == "portal_list":
            page = self.eng.portal_list(self.token(step), step["area"], limit=step.get("limit"))
            assert (None if page is None else len(page.items)) == step["expect_count"], step
        elif op == "list_entities":
            page = self.eng.list(self.stores[step["store"]], step["area"], environment=step.get("environment", "live"))
            assert len(page.items) == step["expect_count"], step
        elif op == "audit":
            # The newest events, newest first: action, key (by name; None for a store
            # event), changed fields, and the scenario's actor on every one.
            # `limit` defaults to the number of events expected (an error step has none).
            expected = step.get("expect", [])
            events = self.eng.audit(self.stores[step["store"]], limit=step.get("limit", len(expected)))
            assert len(events) == len(expected), step
            for event, want in zip(events, expected):
                key = self.keys[want["key"]][0] if want["key"] is not None else None
                assert (event.action, event.key_id, event.changes) == (want["action"], key, want["changes"]), step
                assert event.actor == {"type": "admin", "id": "scenario"}, step
        elif op == "check_leaks":
            # `lines` with each `{name}` replaced by that key's credential; each finding
            # expected as [line, shape, status, key name or None].
            text = "".join(
                re.sub(r"\{([a-z0-9_.]+)\}", lambda m: self.keys[m[1]][1] if m[1] in self.keys else m[0], line) + "\n"
                for line in step["lines"]
            )
            findings = self.eng.check_leaks(text, stop=step.get("stop", False))
            seen = [[f.line, f.shape, f.status, f.key_id] for f in findings]
            wanted = [[line, shape, status, None if key is None else self.keys[key][0]]
                      for line, shape, status, key in step["expect"]]
            assert seen == wanted, step
        else:
            raise AssertionError(f"unknown op {op}")

    def verify(self, step):
        if "key" in step:
            credential = self.keys[step["key"]][1]
        else:
            credential = step.get("credential")
        kwargs = dict(area=step.get("area"), action=step.get("action"), ip=step.get("ip"), path=step.get("path", "/"))
        for _ in range(step.get("repeat", 1)):
            d = self.eng.verify(credential, **kwargs)
        expect = step["expect"]
        actual = {"allowed": d.allowed, "code": d.code, "status": d.status, "message": d.message}
        for field in ("allowed", "code", "status", "message"):
            if field in expect:
                assert actual[field] == expect[field], (field, step)
        headers = dict(d.headers)
        for name, value in expect.get("headers", {}).items():
            assert headers.get(name) == value, (name, step)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario(path):
    scenario = json.loads(path.read_text())
    run = Run()
    for i, step in enumerate(scenario["steps"]):
        wanted = step.get("expect_error")
        if wanted is None:
            run.step(step)
            continue
        with pytest.raises(latchkey.LatchkeyError) as err:
            run.step(step)
        assert err.value.code == wanted, (i, step)
        if "problems" in step:
            assert len(err.value.problems) == step["problems"], (i, step, err.value.problems)
