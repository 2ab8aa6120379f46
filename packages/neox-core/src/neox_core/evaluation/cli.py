"""`neox-eval`: score a neox checkpoint on lm-evaluation-harness tasks."""

from __future__ import annotations

import argparse
import sys

from neox_core import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neox-eval",
        description="Evaluate a neox checkpoint with lm-evaluation-harness (GPT-NeoX's eval.py). "
        "Tasks come from --tasks or the config's eval_tasks; local tasks (a task YAML plus a "
        "local JSONL) from --include-path or eval_include_path. Results go to "
        "<eval_results_prefix>_global_step<N>.json beside the checkpoint, a table to stdout.",
    )
    parser.add_argument("--version", action="version", version=f"neox-eval {__version__}")
    parser.add_argument("configs", nargs="+", metavar="CFG", help="GPT-NeoX YAML config files")
    parser.add_argument("--tasks", nargs="+", help="task names (default: the config's eval_tasks)")
    parser.add_argument("--include-path", help="folder of local task YAMLs")
    parser.add_argument("--load", help="checkpoint save directory (default: the config's load)")
    parser.add_argument("--iteration", type=int, help="step to load (default: latest)")
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples per prompt")
    parser.add_argument("--limit", type=float, help="examples per task (a fraction if < 1)")
    parser.add_argument("--batch-size", type=int, help="default: eval_batch_size, micro batch")
    parser.add_argument("--bootstrap-iters", type=int, default=100_000, help="for stderr")
    parser.add_argument("--output", help="results JSON path (default: from eval_results_prefix)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument(
        "--dtype", choices=("fp32", "bf16", "fp16"), help="default: the config's precision"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        print(
            "neox-eval: error: lm-evaluation-harness is not installed; install neox-core's "
            "eval extra (pip install 'neox-core[eval]')",
            file=sys.stderr,
        )
        return 2
    from neox_core.checkpoint import CheckpointError
    from neox_core.config import ConfigError
    from neox_core.evaluation.run import run_eval_cli
    from neox_core.generation.loading import load_inference_config
    from neox_data.tokenizer import TokenizerError

    overrides: dict[str, object] = {}
    if args.tasks:
        overrides["eval_tasks"] = args.tasks
    if args.include_path:
        overrides["eval_include_path"] = args.include_path
    try:
        cfg = load_inference_config(args.configs, overrides)
        return run_eval_cli(cfg, args)
    except (ConfigError, CheckpointError, TokenizerError) as exc:
        print(f"neox-eval: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
