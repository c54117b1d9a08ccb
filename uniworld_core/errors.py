"""Errors raised by uniworld_core.

Every error says what was found, what was expected and what to do, so that a
message reaching an artist in the ComfyUI UI is enough to fix the problem.
"""

from __future__ import annotations


class UniWorldError(ValueError):
    """Base class for every user-facing error of the pack."""

    def __init__(self, found: str, expected: str, fix: str | None = None):
        self.found, self.expected, self.fix = found, expected, fix
        message = f"{found}; expected {expected}."
        if fix:
            message += f" {fix}"
        super().__init__(message)


class InputError(UniWorldError):
    """A tensor, image or setting that the model cannot use."""


class CheckpointError(UniWorldError):
    """A weight file that is not what the loader expected."""


class Interrupted(RuntimeError):
    """Raised by a progress hook to stop sampling at the next step."""
