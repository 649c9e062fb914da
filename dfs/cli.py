"""The ``dfs`` command line. ``dfs reproduce --quick`` is the main job; later commands plug in here."""
from __future__ import annotations

import argparse
import sys


def _reproduce(args) -> int:
    from .reproduce import NotebookFailed, reproduce

    only = [s for part in (args.only or []) for s in part.split(",")] or None
    try:
        reproduce(quick=args.quick, only=only, out=args.out)
    except NotebookFailed as e:
        print(f"dfs reproduce: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"dfs reproduce: {e}", file=sys.stderr)
        return 2
    return 0


def _eval(args) -> int:
    from .evaluate import evaluate
    from .faces.detect import FaceNotFoundError

    try:
        report = evaluate(args.method, data=args.data, pairs=args.pairs, seed=args.seed, out=args.out,
                          held_out=args.held_out, split_seed=args.split_seed,
                          max_per_identity=args.max_per_identity, self_pairs=args.self_pairs,
                          progress=not args.no_progress, keep_examples=False)
    except (ValueError, FileNotFoundError, FaceNotFoundError) as e:
        print(f"dfs eval: {e}", file=sys.stderr)
        return 2
    print(report.table)
    for f in report.files:
        print(f"wrote {f}")
    return 0


def _held_out(text: str):
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfs", description="Face swap with diffusion models: the thesis companion.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reproduce", help="execute the notebooks in order and regenerate figures/")
    r.add_argument("--quick", action="store_true", help="small, CPU-friendly settings (minutes, not hours)")
    r.add_argument("--only", action="append", metavar="NN[,NN]", help="run only these notebooks, e.g. 01,02")
    r.add_argument("--out", default="build", help="where executed notebooks go (default: build/)")
    r.set_defaults(func=_reproduce)

    from .swap import METHODS
    e = sub.add_parser("eval", help="judge a swap method on held-out face pairs (JSON + markdown table)")
    e.add_argument("--method", default="classical", choices=sorted(METHODS), help="the swap method")
    e.add_argument("--data", default=None, help="faces: LFW (a folder with lfw_home/) or a folder-per-identity "
                   "tree (default: DFS_DATA or data/)")
    e.add_argument("--pairs", type=int, default=20, help="number of (source, target) pairs (default 20)")
    e.add_argument("--seed", type=int, default=0, help="seed of the pair draw and of the method")
    e.add_argument("--out", default="results", help="folder for eval_*.json and eval_*.md (default results/)")
    e.add_argument("--held-out", type=_held_out, default=0.2,
                   help="held-out identities: a fraction in (0, 1) or a count (default 0.2)")
    e.add_argument("--split-seed", type=int, default=0, help="seed of the identity split (default 0)")
    e.add_argument("--max-per-identity", type=int, default=10, help="gallery photos per person (default 10)")
    e.add_argument("--self-pairs", type=int, default=None,
                   help="targets swapped onto themselves for PSNR/SSIM (default min(pairs, 10))")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
