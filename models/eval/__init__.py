"""Held-out evaluations of Kiln's models: `python -m models.eval <model>`."""
from __future__ import annotations

import json
import time


def finish(summary: dict, started: float, json_out: str | None) -> int:
    """Time the evaluation, write the summary as the model card's JSON and print it as the final line."""
    summary["eval_seconds"] = round(time.time() - started, 1)
    if json_out:
        with open(json_out, "w") as fh:
            fh.write(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0
