"""python -m models.train <model> --seed N ... : reproduce Kiln's shipped weights."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.train")
    sub = parser.add_subparsers(dest="model", required=True)
    from . import autoencoder

    autoencoder.add_arguments(sub.add_parser("autoencoder", help="triplane autoencoder (shared latent space)"))
    args = parser.parse_args(argv)
    return {"autoencoder": autoencoder.run}[args.model](args)


if __name__ == "__main__":
    sys.exit(main())
