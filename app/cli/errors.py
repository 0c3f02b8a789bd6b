"""CliError: the one-line failure every CLI command reports as `error: <message>` on stderr."""

from __future__ import annotations


class CliError(Exception):
    """A failure to show as one line; `exit_code` 1 for failures, 2 for usage errors."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
