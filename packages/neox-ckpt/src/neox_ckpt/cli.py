"""`neox-ckpt`: convert between HF and neox, reshard, import GPT-NeoX checkpoints, inspect.

Heavy libraries (torch, transformers) are imported inside the command functions so that
`--help` and `--version` answer at once.
"""

from __future__ import annotations

import argparse
import sys

from neox_ckpt import __version__
from neox_ckpt.errors import ConversionError

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
        "verify",
        help="check a neox checkpoint: files vs manifest (size, hash), shard set, tensor shapes",
    )
    p.add_argument("path", help="a global_step<N> directory, or a save directory (its latest)")
    p.add_argument("--iteration", type=int, help="step of a save directory (default: latest)")
    p.add_argument("--all-steps", action="store_true", help="every step of a save directory")
    p.add_argument(
        "--size-only", action="store_true", help="skip content hashes (sizes, headers, layout)"
    )

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

    p = sub.add_parser(
        "upload",
        help="publish an experiment's checkpoints to the HF Hub (HF format and raw neox)",
        description="Each global_step<N> -> HF (bf16) as revision global_step<N> of "
        "<org>/sfm-<experiment> (last step also on main) and the raw neox checkpoint as revision "
        "global_step<N> of <org>/neox-ckpt-<model>. The token comes from huggingface_hub "
        "(HF_TOKEN or `hf auth login`).",
    )
    p.add_argument("experiment_dir", help="experiment directory (its save dir or checkpoints/)")
    p.add_argument("--org", required=True, help="Hub user or organisation")
    p.add_argument("--steps", default="all", help="all (default), N,M,... or A-B (inclusive)")
    p.add_argument("--experiment", help="experiment name (default: the directory's name)")
    p.add_argument("--model", help="name for neox-ckpt-<model> (default: the experiment name)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--upload-neox-only", action="store_true", help="raw neox checkpoints only")
    only.add_argument("--skip-neox-upload", action="store_true", help="HF conversions only")
    p.add_argument(
        "--precision", choices=("auto", *PRECISIONS), default="bf16", help="HF dtype (bf16)"
    )
    p.add_argument("--tokenizer", help="tokenizer folder or tokenizer.json for the HF repo")
    p.add_argument("--max-retries", type=int, default=20, help="retries per target (20)")
    p.add_argument(
        "--retry-min-wait", type=float, default=120.0, help="first backoff in seconds (120)"
    )
    p.add_argument(
        "--retry-max-wait", type=float, default=3600.0, help="longest backoff in seconds (3600)"
    )
    p.add_argument("--upload-delay", default="0", help="seconds to wait first, or random (0-12 h)")
    p.add_argument("--private", action="store_true", help="create the repositories private")
    p.add_argument("--dry-run", action="store_true", help="print repos, revisions, sizes only")
    p.add_argument(
        "--state-file", help="progress file (default: EXPERIMENT_DIR/hub_upload_state.json)"
    )
    p.add_argument("--name-map", help="shared JSON short name -> experiment, checked for clashes")
    p.add_argument("--endpoint", help="Hub URL (default: huggingface_hub's, i.e. HF_ENDPOINT)")
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
    elif args.command == "upload":
        _upload(args)
    elif args.command == "verify":
        from neox_ckpt.verify import verify

        report = verify(args.path, args.iteration, args.all_steps, hashes=not args.size_only)
        for line in report.lines():
            print(line if report.ok else f"neox-ckpt verify: {line}", file=sys.stdout)
        return 0 if report.ok else 1
    return 0


def _upload(args: argparse.Namespace) -> None:
    import logging

    from neox_ckpt.hub_upload import UploadOptions, upload
    from neox_ckpt.retry import RetryPolicy

    if args.max_retries < 0 or args.retry_min_wait < 0 or args.retry_max_wait < args.retry_min_wait:
        raise ConversionError(
            "--max-retries must be >= 0 and 0 <= --retry-min-wait <= --retry-max-wait"
        )
    logging.basicConfig(level=logging.WARNING, format="neox-ckpt upload: %(message)s")
    logging.getLogger("neox_ckpt.upload").setLevel(logging.INFO)
    opts = UploadOptions(
        org=args.org,
        steps=args.steps,
        experiment=args.experiment,
        model=args.model,
        upload_neox_only=args.upload_neox_only,
        skip_neox_upload=args.skip_neox_upload,
        precision=args.precision,
        tokenizer=args.tokenizer,
        private=args.private,
        dry_run=args.dry_run,
        upload_delay=args.upload_delay,
        state_file=args.state_file,
        name_map=args.name_map,
        endpoint=args.endpoint,
        retry=RetryPolicy(args.max_retries, args.retry_min_wait, args.retry_max_wait),
    )
    upload(args.experiment_dir, opts)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
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
