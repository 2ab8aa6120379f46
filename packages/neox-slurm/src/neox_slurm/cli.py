"""`neox-slurm`: Submit and watch neox training jobs on SLURM."""

from __future__ import annotations

import argparse

from neox_slurm import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neox-slurm", description="Submit and watch neox training jobs on SLURM."
    )
    parser.add_argument("--version", action="version", version=f"neox-slurm {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
