"""The project's exceptions, in one place (pure).

Each kind of failure has one class, and code tells them apart by type, never by
name.  How the command line reports them (``cli.main``):

    TopologyError     a topology file is invalid: ``FILE: field.path: reason``; exit 2
    UsageError        a request that cannot be served as asked (nothing is up, a bad
                      option, a rule that does not exist); exit 2
    ApiError          an error of the emulated AWS API, named as AWS names it
                      (``ResourceNotReadyException``, ``DependencyViolation``...), with
                      its HTTP status; exit 1
    UnreachableError  a process of the emulator does not answer on its socket; exit 1

``RuleEditError`` is the UsageError of ``sg authorize|revoke`` (AWS's code in its text).
An ``ApiError`` crosses the controller's socket as ``to_dict()`` (Lambda's error
object: ``errorType``, ``errorMessage``, ``statusCode``) and is raised again on the
client's side with ``from_dict``.
"""

from __future__ import annotations


class TopologyError(Exception):
    """A topology file is invalid: which file, where in it, and why."""

    def __init__(self, file: str, path: str, reason: str) -> None:
        super().__init__(f"{file}: {path}: {reason}")
        self.file = file
        self.path = path
        self.reason = reason


class UsageError(Exception):
    """A request that cannot be served as asked (reported without a traceback)."""


class RuleEditError(UsageError, ValueError):
    """An ``sg authorize|revoke`` that cannot be applied (AWS's error code in the text)."""


class UnreachableError(Exception):
    """Nothing answers on a socket of the emulator."""


class ApiError(Exception):
    """An error of the emulated AWS API: AWS's exception name, message, HTTP status."""

    def __init__(self, kind: str, message: str, status: int = 400, **extra: object) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.status, self.extra = kind, message, status, extra

    def to_dict(self) -> dict:
        return {"errorType": self.kind, "errorMessage": self.message,
                "statusCode": self.status, **self.extra}

    @classmethod
    def from_dict(cls, error: dict) -> ApiError:
        extra = {k: v for k, v in error.items()
                 if k not in ("errorType", "errorMessage", "statusCode")}
        return cls(str(error.get("errorType")), str(error.get("errorMessage")),
                   int(error.get("statusCode") or 400), **extra)

    @property
    def error(self) -> dict:
        """Lambda's error object (what ``--json`` prints)."""
        return self.to_dict()
