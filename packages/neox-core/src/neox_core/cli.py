"""`neox-train`: Train a neox model from GPT-NeoX-style YAML configs."""

from __future__ import annotations

import argparse

from neox_core import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neox-train", description="Train a neox model from GPT-NeoX-style YAML configs."
    )
    parser.add_argument("--version", action="version", version=f"neox-train {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
