"""The ``equiframe`` command line: ``equiframe demo``, and the experiments' commands as they land."""

from __future__ import annotations

import argparse
import sys


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # noqa: PLC0415  (keep --help fast)

    path = run_demo(args.out, seed=args.seed, quick=args.quick)
    print(path.read_text())
    print(f"report written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equiframe",
        description="Frame Averaging and Tensor Frames: make any network invariant/equivariant.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the main demonstration on a small built-in default and write its report")
    demo.add_argument("--out", default="reports/demo", help="output directory (default: reports/demo)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quick", action="store_true", help="smaller timing batch (for tests)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
