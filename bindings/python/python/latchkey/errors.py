"""The exceptions of `latchkey`: one family, each with a stable `code` and every problem."""

from __future__ import annotations

from typing import List, Sequence


class LatchkeyError(Exception):
    """Base class. `code` is stable and machine-readable; `problems` lists every problem."""

    code: str
    problems: List[str]

    def __init__(self, message: str, code: str = "ERROR", problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.problems = list(problems)

    def __str__(self) -> str:
        if self.problems and self.problems != [self.message]:
            return f"{self.message}: " + "; ".join(self.problems)
        return self.message


class ValidationError(LatchkeyError):
    """The input was rejected (HTTP 400); nothing was written."""


class NotFoundError(LatchkeyError):
    """No such store, key or entity (404)."""


class ConflictError(LatchkeyError):
    """The change conflicts with the current state (409)."""


class ForbiddenError(LatchkeyError):
    """The actor may not do this (403)."""


class PlanRequiredError(LatchkeyError):
    """The store needs an active Pro plan (403)."""


class NotAllowedError(LatchkeyError):
    """The operation does not exist for this kind of entity (405)."""


class StorageError(LatchkeyError):
    """The database failed; the operation was not applied (500)."""


class ClosedError(LatchkeyError):
    """The engine was closed (`Engine.close`, or the end of its `with` block)."""
