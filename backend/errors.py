"""Exceptions that carry a wire-protocol error code, and the mapping from other failures."""
from __future__ import annotations


class JobError(Exception):
    def __init__(self, code: str, message: str, **extra):
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


def classify(exc: BaseException) -> JobError:
    """Map any exception raised by model code to a JobError with a protocol code."""
    from models.mesh import MeshExtractionError
    from models.meshio import MeshInputError

    if isinstance(exc, JobError):
        return exc
    if isinstance(exc, MeshInputError):
        return JobError(exc.code, str(exc))
    if isinstance(exc, MeshExtractionError):
        return JobError("empty_mesh", str(exc))
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return JobError("out_of_memory", "the device ran out of memory: try a lower resolution or the CPU")
    return JobError("internal", f"{type(exc).__name__}: {exc}")
