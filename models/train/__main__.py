"""python -m models.train <model> --seed N ... : reproduce Kiln's shipped weights."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.train")
    sub = parser.add_subparsers(dest="model", required=True)
    from . import autoencoder, classifier, edit, edit_kinds, grounding, images, part_presence, text

    autoencoder.add_arguments(sub.add_parser("autoencoder", help="triplane autoencoder (shared latent space)"))
    classifier.add_arguments(sub.add_parser("classifier", help="evaluation-only category classifier"))
    text.add_arguments(sub.add_parser("text", help="text -> latent rectified-flow DiT"))
    edit.add_arguments(sub.add_parser("edit", help="instruction editing flow in the latent"))
    edit_kinds.add_arguments(sub.add_parser("edit_kinds", help="which kind of edit an instruction asks for"))
    grounding.add_arguments(sub.add_parser("grounding", help="where and to what colour a recolour edit applies"))
    part_presence.add_arguments(sub.add_parser("part_presence", help="does the asset have the part an instruction names"))
    images.add_arguments(sub.add_parser("images", help="front/back images -> latent reconstructor"))
    args = parser.parse_args(argv)
    return {"autoencoder": autoencoder.run, "classifier": classifier.run, "text": text.run, "edit": edit.run,
            "edit_kinds": edit_kinds.run, "grounding": grounding.run, "images": images.run, "part_presence": part_presence.run}[args.model](args)


if __name__ == "__main__":
    sys.exit(main())
