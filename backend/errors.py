"""Exceptions that carry a wire-protocol error code, and the mapping from other failures."""
from __future__ import annotations

from .protocol import ERROR_CODES


class JobError(Exception):
    def __init__(self, code: str, message: str, **extra):
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


def classify(exc: BaseException) -> JobError:
    """Map any exception raised by model code to a JobError with a protocol code.
    Model-side errors (MeshInputError, MeshExtractionError, EmptyPromptError) carry a `code`."""
    if isinstance(exc, JobError):
        return exc
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code in ERROR_CODES:
        return JobError(code, str(exc))
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return JobError("out_of_memory", "the device ran out of memory: try a lower resolution or the CPU")
    return JobError("internal", f"{type(exc).__name__}: {exc}")
