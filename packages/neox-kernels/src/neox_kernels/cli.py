"""`neox-kernels`: build information and self-checks of the compiled core."""

from __future__ import annotations

import argparse
import json
import sys

from neox_kernels import __version__


def _build_info() -> dict:
    from neox_kernels import _index

    return dict(_index.build_info())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="neox-kernels", description="Inspect and check neox's compiled kernels."
    )
    parser.add_argument("--version", action="version", version=f"neox-kernels {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print how the extension was built (JSON)")
    args = parser.parse_args(argv)

    if args.command == "info":
        json.dump(_build_info(), sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
