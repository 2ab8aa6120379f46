"""`neox-data`: Tokenize corpora into Megatron-compatible .bin/.idx datasets and inspect them."""

from __future__ import annotations

import argparse

from neox_data import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neox-data",
        description="Tokenize corpora into Megatron-compatible .bin/.idx datasets and inspect them.",
    )
    parser.add_argument("--version", action="version", version=f"neox-data {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
