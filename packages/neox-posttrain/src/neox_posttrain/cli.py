"""`neox-posttrain`: Post-train neox models: SFT, DPO, KTO, reward models."""

from __future__ import annotations

import argparse

from neox_posttrain import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neox-posttrain", description="Post-train neox models: SFT, DPO, KTO, reward models."
    )
    parser.add_argument("--version", action="version", version=f"neox-posttrain {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
