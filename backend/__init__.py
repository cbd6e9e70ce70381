"""Kiln's local backend: JSON-lines server, job queue, CLI. Started by the add-on as
`python -m backend serve`; usable directly as `python -m backend ...`."""

__version__ = "0.1.0"
