"""python -m models.eval <model>: held-out evaluation, prints a final JSON line."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.eval")
    sub = parser.add_subparsers(dest="model", required=True)
    from . import autoencoder, edit, edit_kinds, grounding, images, part_presence, text

    autoencoder.add_arguments(sub.add_parser("autoencoder", help="round-trip quality on held-out shapes"))
    text.add_arguments(sub.add_parser("text", help="text -> 3D on held-out prompts"))
    edit.add_arguments(sub.add_parser("edit", help="instruction editing on held-out pairs"))
    edit_kinds.add_arguments(sub.add_parser("edit_kinds", help="instruction kind reader on held-out phrasings"))
    grounding.add_arguments(sub.add_parser("grounding", help="recolour part grounding on held-out assets"))
    part_presence.add_arguments(sub.add_parser("part_presence", help="part presence on held-out assets and phrasings"))
    images.add_arguments(sub.add_parser("images", help="front/back images -> 3D on held-out assets"))
    args = parser.parse_args(argv)
    return {"autoencoder": autoencoder.run, "text": text.run, "edit": edit.run,
            "edit_kinds": edit_kinds.run, "grounding": grounding.run, "images": images.run, "part_presence": part_presence.run}[args.model](args)


if __name__ == "__main__":
    sys.exit(main())
