"""Exit codes and the one error the commands raise: a message for people, a body for --json."""
from __future__ import annotations

from typing import Any

OK = 0
FAILED = 1  # the API refused, or the run ended rejected or failed
USAGE = 2  # bad arguments, names or local files
UNREACHABLE = 3  # the API or storage cannot be reached, or a key was refused
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class CliError(Exception):
    """What went wrong, what to do about it, and the exit code that says which kind it was."""

    def __init__(self, message: str, code: int = FAILED, *, lines: list[str] | None = None,
                 body: dict[str, Any] | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.lines = lines or []  # more detail, one item a line (field errors, reasons)
        self.body = body  # the API's error body, when there was one
        self.status = status  # the HTTP status, when there was one

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "exit_code": self.code}
        if self.status is not None:
            error["status"] = self.status
        if self.body:
            error["api"] = self.body
        return {"error": error}
