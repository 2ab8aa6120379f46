"""`neox-ckpt`: convert between HF and neox, reshard, import GPT-NeoX checkpoints, inspect.

Heavy libraries (torch, transformers) are imported inside the command functions so that
`--help` and `--version` answer at once.
"""

from __future__ import annotations

import argparse
import sys

from neox_ckpt import __version__

PRECISIONS = ("fp32", "bf16", "fp16")


def _force(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force", action="store_true", help="replace a non-empty --output-dir (atomically)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neox-ckpt", description="Convert, reshard and inspect neox checkpoints."
    )
    parser.add_argument("--version", action="version", version=f"neox-ckpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "hf-to-neox",
        help="HF GPTNeoX/LLaMA/Mistral(LLaMA-shaped) model -> neox checkpoint + neox YAML",
    )
    p.add_argument("--hf-model", required=True, help="local folder or hub name (org/model)")
    p.add_argument("--revision", help="hub branch, tag or commit (e.g. step143000)")
    p.add_argument("--output-dir", required=True, help="neox save directory to create")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline stages (default 1)")
    p.add_argument("--iteration", type=int, default=0, help="step to write (default 0)")
    p.add_argument(
        "--dtype",
        choices=("auto", *PRECISIONS),
        default="auto",
        help="stored weight dtype (default auto: as in the HF files)",
    )
    _force(p)

    p = sub.add_parser("neox-to-hf", help="neox checkpoint (any TP/PP) -> HF model folder")
    p.add_argument(
        "--input-dir", required=True, help="neox save directory or its global_step<N> directory"
    )
    p.add_argument("--iteration", type=int, help="step to convert (default: the one in latest)")
    p.add_argument("--output-dir", required=True, help="HF model folder to create")
    p.add_argument(
        "--precision",
        choices=("auto", *PRECISIONS),
        default="auto",
        help="dtype of the HF weights (default auto: as stored)",
    )
    p.add_argument("--tokenizer", help="HF tokenizer folder or tokenizer.json to include")
    p.add_argument(
        "--config",
        nargs="+",
        help="neox/GPT-NeoX YAML files (default: the config.json saved in the checkpoint)",
    )
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (5GB)")
    _force(p)

    p = sub.add_parser("reshard", help="re-split a neox checkpoint to another TP/PP layout")
    p.add_argument("input_dir", help="neox save directory or global_step<N> directory")
    p.add_argument("--output-dir", required=True, help="neox save directory to create")
    p.add_argument("--tp", type=int, required=True, help="new tensor-parallel size")
    p.add_argument("--pp", type=int, help="new pipeline size (default: unchanged)")
    p.add_argument("--iteration", type=int, help="step to reshard (default: latest)")
    _force(p)

    p = sub.add_parser("inspect", help="files, tensors, norms, parameters, config, iteration")
    p.add_argument("path", help="neox checkpoint, HF folder, .safetensors file or GPT-NeoX dir")
    p.add_argument("--iteration", type=int, help="step of a save directory (default: latest)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--no-norms", action="store_true", help="do not read tensor values")

    p = sub.add_parser(
        "import-gpt-neox",
        help="legacy GPT-NeoX DeepSpeed checkpoint -> neox checkpoint (weights only)",
    )
    p.add_argument("--input-dir", required=True, help="GPT-NeoX save dir or its global_step<N>")
    p.add_argument("--output-dir", required=True, help="neox save directory to create")
    p.add_argument(
        "--config", nargs="+", help="GPT-NeoX YAML files (default: <global_stepN>/configs/*.yml)"
    )
    p.add_argument("--iteration", type=int, help="step to import (default: latest)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size to write (default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline stages to write (default 1)")
    _force(p)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "hf-to-neox":
        from neox_ckpt.hf_to_neox import describe, hf_to_neox

        result = hf_to_neox(
            args.hf_model,
            args.output_dir,
            revision=args.revision,
            tp=args.tp,
            pp=args.pp,
            iteration=args.iteration,
            dtype=args.dtype,
            force=args.force,
        )
        print(describe(result))
    elif args.command == "neox-to-hf":
        from neox_ckpt.neox_to_hf import describe, neox_to_hf

        print(
            describe(
                neox_to_hf(
                    args.input_dir,
                    args.output_dir,
                    iteration=args.iteration,
                    precision=args.precision,
                    tokenizer=args.tokenizer,
                    config_paths=args.config,
                    max_shard_size=args.max_shard_size,
                    force=args.force,
                )
            )
        )
    elif args.command == "reshard":
        from neox_ckpt.reshard import describe, reshard

        print(
            describe(
                reshard(
                    args.input_dir,
                    args.output_dir,
                    tp=args.tp,
                    pp=args.pp,
                    iteration=args.iteration,
                    force=args.force,
                )
            )
        )
    elif args.command == "inspect":
        import json

        from neox_ckpt.inspection import inspect_path, render_text

        info = inspect_path(args.path, args.iteration, norms=not args.no_norms)
        print(json.dumps(info, indent=2, allow_nan=False) if args.json else render_text(info))
    elif args.command == "import-gpt-neox":
        from neox_ckpt.legacy_gpt_neox import import_gpt_neox

        step = import_gpt_neox(
            args.input_dir,
            args.output_dir,
            config_paths=args.config,
            iteration=args.iteration,
            tp=args.tp,
            pp=args.pp,
            force=args.force,
        )
        print(f"wrote {step} (weights only; start from it with finetune: true)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from neox_ckpt.errors import ConversionError

    try:
        return _run(args)
    except ConversionError as e:
        print(f"neox-ckpt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `neox-ckpt inspect ... | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
