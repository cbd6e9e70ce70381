"""Command line: the same jobs as the server, without Blender.

    python -m backend serve [--output-root DIR] [--device auto|cpu|cuda]
    python -m backend models [--json] [--models-dir DIR]
    python -m backend encode --mesh FILE --out DIR [--fit-steps N] [--resolution R]
    python -m backend generate --prompt TEXT [--seed N] [--resolution R] --out DIR
    python -m backend generate --front A.png [--back B.png] [--refine [--refine-steps N]] --out DIR
    python -m backend edit (--asset DIR/latent.safetensors | --mesh FILE) --instruction TEXT [--strength S] --out DIR
    python -m backend batch JOBS.jsonl --out DIR [--ray ADDRESS|auto] [--workers N] [--retries K]

Progress goes to stderr (a bar on a terminal, nothing when piped); failures exit 2 with
one line `error [code]: message`; --json prints the result as one JSON line on stdout.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from . import __version__
from .protocol import RESOLUTIONS, ProtocolError, parse_request

DEFAULT_OUTPUT_ROOT = os.environ.get("KILN_OUTPUT_ROOT", os.path.join(os.path.expanduser("~"), "kiln_output"))


def _job_parser(sub, name: str, help_: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_)
    p.add_argument("--out", required=True, help="folder for asset.glb, latent.safetensors, preview.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=128, choices=RESOLUTIONS)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-preview", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    _models_dir_arg(p)
    return p


def _models_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", default=None,
                   help="folder with published checkpoints (shap-e/, shap-e-img2img/, TripoSR/); "
                        "default: $KILN_MODELS_DIR, then the Hugging Face cache")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description="Kiln backend")
    parser.add_argument("--version", action="version", version=f"kiln-backend {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="JSON-lines server on stdin/stdout (what the add-on starts)")
    serve.add_argument("--output-root", default=DEFAULT_OUTPUT_ROOT)
    serve.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    serve.add_argument("--log-file", default=None)
    serve.add_argument("--debug", action="store_true", help="include tracebacks in error events")
    _models_dir_arg(serve)

    models = sub.add_parser("models", help="list models, their modes and availability")
    models.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    models.add_argument("--json", action="store_true")
    _models_dir_arg(models)

    enc = _job_parser(sub, "encode", "fit a latent to any mesh and write its reconstruction")
    enc.add_argument("--mesh", required=True)
    enc.add_argument("--fit-steps", type=int, default=60)
    enc.add_argument("--up", choices=("y", "z"), default=None, help="the mesh's up axis (default: y for glTF, else z)")

    gen = _job_parser(sub, "generate", "text or images -> asset")
    gen.add_argument("--prompt")
    gen.add_argument("--front")
    gen.add_argument("--back")
    gen.add_argument("--model")
    gen.add_argument("--steps", type=int)
    gen.add_argument("--guidance", type=float)
    gen.add_argument("--refine", action="store_true",
                     help="images: optimise the result against the image(s) for a few seconds (GTR-style)")
    gen.add_argument("--refine-steps", type=int, help="images: refinement steps (implies --refine; default 10)")
    gen.add_argument("--candidates", type=int,
                     help="text: samples tried, the first in one piece kept (default 4; 1: the seed's own sample)")
    gen.add_argument("--no-rebuild", dest="rebuild", action="store_false", default=None,
                     help="text: leave a sample still in pieces as it is (default: rebuilt whole by the image "
                          "reconstructor from its front and back views)")

    edit = _job_parser(sub, "edit", "change an asset with a text instruction")
    src = edit.add_mutually_exclusive_group(required=True)
    src.add_argument("--asset", help="a latent.safetensors written by Kiln")
    src.add_argument("--mesh", help="any OBJ/PLY/STL/GLB mesh (a latent is fitted first)")
    edit.add_argument("--instruction", required=True)
    edit.add_argument("--strength", type=float, default=1.0)
    edit.add_argument("--model")
    edit.add_argument("--steps", type=int)
    edit.add_argument("--guidance", type=float)
    edit.add_argument("--fit-steps", type=int, default=60, help="latent fitting steps when editing a --mesh")
    edit.add_argument("--up", choices=("y", "z"), default=None, help="the --mesh's up axis (default: y for glTF, else z)")
    for p in (gen, edit):
        p.add_argument("--min-part", type=float, default=None,
                       help="drop disconnected parts smaller than this share of the largest one (floaters); "
                            "0 keeps every part (default: 0.05 for Kiln's own assets, 0 for an edited --mesh)")
    from .batch import add_batch_parser

    add_batch_parser(sub)
    return parser


def _request_from_args(args: argparse.Namespace) -> dict:
    fields = {"op": args.command, "id": "cli", "seed": args.seed, "resolution": args.resolution,
              "out": os.path.basename(os.path.normpath(args.out)), "preview": not args.no_preview}
    if args.command == "encode":
        fields.update(mesh=args.mesh, fit_steps=args.fit_steps, up=args.up)
    elif args.command == "generate":
        mode = "images" if args.front or args.back else "text"
        fields.update(mode=mode, prompt=args.prompt, front=args.front, back=args.back, model=args.model,
                      steps=args.steps, guidance=args.guidance, refine=args.refine or args.refine_steps is not None,
                      refine_steps=args.refine_steps, candidates=args.candidates, rebuild=args.rebuild,
                      min_part=args.min_part)
        if mode == "text" and args.prompt is None:
            raise ProtocolError("bad_request", "give --prompt TEXT, or --front IMAGE [--back IMAGE]")
    else:
        fields.update(asset=args.asset, mesh=args.mesh, instruction=args.instruction, strength=args.strength,
                      model=args.model, steps=args.steps, guidance=args.guidance, up=args.up,
                      fit_steps=args.fit_steps if args.mesh else None, min_part=args.min_part)
    return parse_request(json.dumps({k: v for k, v in fields.items() if v is not None}))


class _Progress:
    """tqdm bar on a terminal; silent when stderr is not a TTY."""

    def __init__(self):
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=100, unit="%", file=sys.stderr, leave=False,
                            bar_format="{desc:24s} {bar} {percentage:3.0f}% {elapsed}")

    def __call__(self, type_: str, fields: dict) -> None:
        if self.bar is not None and type_ == "progress":
            self.bar.set_description_str(fields["stage"])
            self.bar.n = int(fields["fraction"] * 100)
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run_job_command(args: argparse.Namespace) -> int:
    from models.mesh import Cancelled

    from .errors import classify
    from .jobs import JobContext, run_job
    from .registry import Registry
    from .results import OutputRoot

    try:
        req = _request_from_args(args)
    except ProtocolError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    root = os.path.dirname(os.path.abspath(os.path.normpath(args.out)))
    progress = _Progress()
    ctx = JobContext("cli", Registry(args.device), OutputRoot(root), emit=progress)
    try:
        result = run_job(ctx, req)
    except KeyboardInterrupt:
        progress.close()
        print("error [cancelled]: interrupted", file=sys.stderr)
        return 130
    except Cancelled:
        progress.close()
        print("error [cancelled]: cancelled", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one clear line, no traceback
        progress.close()
        err = classify(exc)
        if err.code == "internal":
            logging.getLogger("kiln.backend").exception("job failed")
        print(f"error [{err.code}]: {err.message}", file=sys.stderr)
        return 2
    progress.close()
    for warning in result.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"wrote {result['glb']}" + (f" (fit IoU {result['fit_iou']:.3f})" if result.get("fit_iou") else "")
              + _refine_note(result.get("refine")))
    return 0


def _refine_note(refine: dict | None) -> str:
    if not refine:
        return ""
    before, after = refine["before"], refine["after"]
    return (f" (refined in {refine['steps']} steps, {refine['seconds']:.1f} s: silhouette IoU "
            f"{before['silhouette_iou']:.3f} -> {after['silhouette_iou']:.3f})")


def run_models(args: argparse.Namespace) -> int:
    from .registry import Registry

    reg = Registry(args.device)
    rows = reg.status()
    if args.json:
        print(json.dumps({"device": str(reg.device), "models": rows}))
        return 0
    print(f"device: {reg.device}")
    for r in rows:
        state = "available" if r["available"] else f"unavailable: {r['reason']}"
        print(f"  {r['id']:18s} {','.join(r['modes']):8s} {state}")
        if r.get("weights"):
            print(f"  {'':18s} {'':8s} weights: {r['weights']}")
        if r.get("device_needs") and r["device_needs"] != "CPU or CUDA":
            print(f"  {'':18s} {'':8s} device: {r['device_needs']}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from .registry import Registry
    from .server import Server, protect_stdout

    proto = protect_stdout()
    handlers = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s kiln %(levelname)s %(message)s", handlers=handlers)
    server = Server(args.output_root, Registry(args.device), stdout=proto, debug=args.debug)
    return server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "models_dir", None):  # the adapters read it from the environment (backend/adapters.py)
        os.environ["KILN_MODELS_DIR"] = os.path.abspath(os.path.expanduser(args.models_dir))
    if args.command == "serve":
        return run_serve(args)
    if args.command == "models":
        return run_models(args)
    if args.command == "batch":
        from .batch import run_batch_command

        return run_batch_command(args)
    return run_job_command(args)
