"""`neox-posttrain`: Post-train neox models: SFT, DPO, KTO, reward models.

`sft|dpo|kto|rm CFG...` run `neox-train` on the same GPT-NeoX configs with `train_impl`
set to the subcommand (a config that names another train_impl is an error, not silently
overridden); `precompute CFG...` writes the reference log-probabilities DPO/KTO read when
`precompute_model_name` is set. No torch import before a subcommand runs.
"""

from __future__ import annotations

import argparse
import sys

from neox_posttrain import __version__

IMPLS = {"sft": "normal", "dpo": "dpo", "kto": "kto", "rm": "rm"}
HELP = {
    "sft": "supervised fine-tuning on chat-labelled data (loss on assistant tokens; z_loss)",
    "dpo": "direct preference optimisation on chosen/rejected pairs (dataset_impl pairwise)",
    "kto": "KTO on desirable/undesirable examples (train_reward_data_paths)",
    "rm": "a reward model (Bradley-Terry on a scalar head) on chosen/rejected pairs",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neox-posttrain",
        description="Post-train neox models: SFT, DPO, KTO, reward models. Configs are "
        "GPT-NeoX YAML files, merged in order, as for neox-train.",
    )
    parser.add_argument("--version", action="version", version=f"neox-posttrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in HELP.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("configs", nargs="+", metavar="CFG", help="GPT-NeoX YAML config files")
        p.add_argument("--dry-run", action="store_true", help="print the resolved config, exit")
    p = sub.add_parser(
        "precompute",
        help="write reference log-probs beside the data (<prefix>_<precompute_model_name>)",
        description="Score every token dataset the config names with the checkpoint in "
        "`load` and write <prefix>_<name>.bin/.idx (float32 per token) beside it.",
    )
    p.add_argument("configs", nargs="+", metavar="CFG", help="GPT-NeoX YAML config files")
    p.add_argument("--model-name", help="default: the config's precompute_model_name")
    p.add_argument("--batch-size", type=int, default=8, help="documents per forward pass")
    p.add_argument("--overwrite", action="store_true", help="recompute existing files")
    return parser


def _load(configs: list[str], overrides: dict | None = None):
    from neox_core.config import ConfigError, load_config

    try:
        return load_config(configs, overrides)
    except ConfigError as e:
        raise SystemExit(f"neox-posttrain: error: {e}") from None


def cmd_train(args: argparse.Namespace) -> int:
    want = IMPLS[args.command]
    cfg = _load(args.configs)
    have = cfg.posttrain.train_impl
    if cfg.sources.get("posttrain.train_impl", "default") != "default" and have != want:
        where = cfg.sources["posttrain.train_impl"]
        raise SystemExit(
            f"neox-posttrain: error: {where}: train_impl is {have!r}, but the command is "
            f"{args.command!r} (train_impl {want!r})"
        )
    if have != want:
        cfg = _load(args.configs, {"train_impl": want})
    if args.dry_run:
        from neox_core.cli import format_dry_run

        print(format_dry_run(cfg, args.configs))
        return 0
    from neox_core.training.run import main_train

    return int(main_train(cfg) or 0)


def cmd_precompute(args: argparse.Namespace) -> int:
    cfg = _load(args.configs)
    name = args.model_name or cfg.posttrain.precompute_model_name
    if not name:
        raise SystemExit(
            "neox-posttrain: error: give --model-name or set precompute_model_name in the config"
        )
    if not cfg.checkpoint.load:
        raise SystemExit("neox-posttrain: error: `load` must name the reference checkpoint")
    import torch

    from neox_core.checkpoint import load_checkpoint
    from neox_core.models import build_model
    from neox_posttrain.precompute import precompute

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg.model, seed=None)
    loaded = load_checkpoint(
        cfg.checkpoint.load, model=model, iteration=cfg.checkpoint.iteration, weights_only=True
    )
    print(f" > reference model: {loaded.path}")
    precompute(cfg, model.to(device), name, device, args.batch_size, args.overwrite)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "precompute":
        return cmd_precompute(args)
    return cmd_train(args)


if __name__ == "__main__":
    sys.exit(main())
