"""`neox-generate`: sample text from a neox checkpoint with GPT-NeoX's generation keys."""

from __future__ import annotations

import argparse
import sys

from neox_core import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neox-generate",
        description="Generate text from a neox checkpoint (GPT-NeoX's generate.py). The configs "
        "are the training run's YAML files plus GPT-NeoX's text-generation keys "
        "(text_gen_type, sample_input_file, sample_output_file, num_samples, maximum_tokens, "
        "prompt_end, temperature, top_k, top_p, recompute) and neox's stop_strings. Any "
        "checkpoint loads, whatever its tensor/pipeline-parallel layout.",
    )
    parser.add_argument("--version", action="version", version=f"neox-generate {__version__}")
    parser.add_argument("configs", nargs="+", metavar="CFG", help="GPT-NeoX YAML config files")
    parser.add_argument("--load", help="checkpoint save directory (default: the config's load)")
    parser.add_argument("--iteration", type=int, help="step to load (default: latest)")
    parser.add_argument("--text-gen-type", choices=("unconditional", "input-file", "interactive"))
    parser.add_argument("--sample-input-file", help="prompts file (overrides the config)")
    parser.add_argument("--sample-output-file", help="JSONL output file (overrides the config)")
    parser.add_argument("--seed", type=int, help="sampling seed (default: the config's seed)")
    parser.add_argument("--batch-size", type=int, default=1, help="prompts decoded together")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument(
        "--dtype", choices=("fp32", "bf16", "fp16"), help="default: the config's precision"
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the decode step with torch.compile (CUDA graphs on CUDA); "
        "default: on for CUDA, off for CPU",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {}
    for key in ("text_gen_type", "sample_input_file", "sample_output_file"):
        value = getattr(args, key)
        if value is not None:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print("neox-generate: error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    from neox_core.checkpoint import CheckpointError
    from neox_core.config import ConfigError
    from neox_core.generation.loading import load_inference_config
    from neox_core.generation.run import run_generation
    from neox_core.generation.samples import PromptFileError
    from neox_data.tokenizer import TokenizerError

    try:
        cfg = load_inference_config(args.configs, _overrides(args))
        return run_generation(
            cfg,
            load_dir=args.load,
            iteration=args.iteration,
            seed=args.seed,
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            compile=args.compile,
        )
    except (ConfigError, CheckpointError, PromptFileError, TokenizerError) as exc:
        print(f"neox-generate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
