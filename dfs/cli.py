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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfs", description="Face swap with diffusion models: the thesis companion.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reproduce", help="execute the notebooks in order and regenerate figures/")
    r.add_argument("--quick", action="store_true", help="small, CPU-friendly settings (minutes, not hours)")
    r.add_argument("--only", action="append", metavar="NN[,NN]", help="run only these notebooks, e.g. 01,02")
    r.add_argument("--out", default="build", help="where executed notebooks go (default: build/)")
    r.set_defaults(func=_reproduce)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
