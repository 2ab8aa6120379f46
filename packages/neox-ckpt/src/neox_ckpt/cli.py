"""`neox-ckpt`: Convert, reshard and inspect neox checkpoints."""

from __future__ import annotations

import argparse

from neox_ckpt import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neox-ckpt", description="Convert, reshard and inspect neox checkpoints."
    )
    parser.add_argument("--version", action="version", version=f"neox-ckpt {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
