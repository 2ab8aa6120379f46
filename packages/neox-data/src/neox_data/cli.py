"""`neox-data`: Tokenize corpora into Megatron-compatible .bin/.idx datasets and inspect them.

Only argparse and the standard library are imported at start-up; each command imports the
library modules it needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from neox_data import __version__

TOKENIZER_TYPES = (
    "HFTokenizer",
    "HFGPT2Tokenizer",
    "GPT2BPETokenizer",
    "SPMTokenizer",
    "CharLevelTokenizer",
)


def _workers(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _add_tokenizer_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tokenizer")
    g.add_argument(
        "--tokenizer-type",
        default="HFTokenizer",
        help=f"GPT-NeoX tokenizer type: {', '.join(TOKENIZER_TYPES)} (default HFTokenizer)",
    )
    g.add_argument("--vocab-file", help="tokenizer.json, vocab.json (GPT-2 BPE) or .model (SPM)")
    g.add_argument("--merge-file", help="merges.txt for GPT2BPETokenizer")
    g.add_argument("--tokenizer-path", help="a local HF tokenizer folder (or tokenizer.json)")
    g.add_argument("--eod-token", help="name of the end-of-document token (default <|endoftext|>)")


def _add_input_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input")
    g.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="JSONL (.jsonl, .gz, .zst), JSON array, Parquet, text files, folders of them, a "
        "save_to_disk folder or an HF hub name; comma-separated lists are accepted",
    )
    g.add_argument("--jsonl-keys", nargs="+", default=None, help="keys to tokenize (default text)")
    g.add_argument("--subset", help="HF dataset configuration (hub names only)")
    g.add_argument("--split", help="HF dataset split (default train)")
    g.add_argument("--num-docs", type=int, help="number of documents, for progress and ETA")
    g.add_argument(
        "--mode",
        choices=["auto", "text", "chat", "dpo", "kto"],
        default="auto",
        help="auto: chat for keys messages/conversation(s), text otherwise",
    )
    g.add_argument("--append-eod", action="store_true", help="append the eod token to documents")
    c = p.add_argument_group("chat")
    c.add_argument("--chat-template", help="a .jinja chat template (default: the tokenizer's)")
    c.add_argument("--only-last", action="store_true", help="train only on the last turn")
    c.add_argument("--no-mask", action="store_true", help="train on every token")
    c.add_argument(
        "--for-rm", action="store_true", help="train only on the final EOS (reward models)"
    )
    c.add_argument("--generation-role", default="assistant", help="role the model plays")
    c.add_argument("--prompt-key", default="prompt", help="DPO: shared prompt key, if present")
    c.add_argument("--kto-label-key", default="label", help="KTO: boolean desirable flag key")
    r = p.add_argument_group("runtime")
    r.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help="worker processes (default: the CPUs the job was given: CPU affinity, "
        "SLURM_CPUS_PER_TASK, cgroup quota)",
    )
    r.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    r.add_argument("--log-interval", type=float, default=30.0, help="seconds between log lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neox-data",
        description="Tokenize corpora into Megatron-compatible .bin/.idx datasets and inspect them.",
    )
    parser.add_argument("--version", action="version", version=f"neox-data {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("tokenize", help="tokenize inputs into <prefix>_<key>_document.bin/.idx")
    _add_input_args(t)
    t.add_argument("--output-prefix", required=True, help="path prefix of the outputs")
    t.add_argument("--dataset-impl", default="mmap", help="only mmap is supported")
    t.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_tokenizer_args(t)

    c = sub.add_parser("count", help="tokens, documents and length histogram")
    c.add_argument(
        "target",
        nargs="*",
        help="dataset prefixes (.bin/.idx); with --input, raw inputs are tokenized and counted",
    )
    c.add_argument("--json", action="store_true", help="print JSON")
    cin = c.add_argument_group("raw inputs")
    cin.add_argument("--input", nargs="+", help="inputs to tokenize and count (nothing written)")
    cin.add_argument("--jsonl-keys", nargs="+", default=None)
    cin.add_argument("--subset")
    cin.add_argument("--split")
    cin.add_argument("--mode", choices=["auto", "text", "chat"], default="auto")
    cin.add_argument("--append-eod", action="store_true")
    cin.add_argument("--chat-template")
    cin.add_argument("--workers", type=_workers, default=None, help="default: allocated CPUs")
    cin.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    _add_tokenizer_args(c)

    i = sub.add_parser("inspect", help="stats, verification and decoded documents of a dataset")
    i.add_argument("prefix", help="dataset prefix, or a tokenize --output-prefix")
    i.add_argument("--docs", type=int, default=3, help="decode this many documents (default 3)")
    i.add_argument("--doc", type=int, action="append", help="decode this document (repeatable)")
    i.add_argument("--raw", action="store_true", help="print token ids instead of text")
    i.add_argument("--json", action="store_true", help="print JSON")
    _add_tokenizer_args(i)

    m = sub.add_parser("merge", help="concatenate datasets, keeping document boundaries")
    m.add_argument("inputs", nargs="+", help="dataset prefixes to merge, in order")
    m.add_argument("--output-prefix", required=True)

    v = sub.add_parser("verify", help="check a .bin/.idx pair (structure, and token ids)")
    v.add_argument("prefixes", nargs="+", metavar="PREFIX", help="dataset prefixes")
    vg = v.add_mutually_exclusive_group()
    vg.add_argument(
        "--tokenizer", help="tokenizer folder or tokenizer.json: ids must be below its vocab size"
    )
    vg.add_argument("--vocab-size", type=int, help="ids must be below this")

    pr = sub.add_parser("prepare", help="HF dataset -> counts, dataset.jsonl, tokens, results")
    pr.add_argument("--dataset", required=True, help="HF hub name or save_to_disk folder")
    pr.add_argument("--subset")
    pr.add_argument("--split", default="train")
    pr.add_argument("--output-dir", default=".", help="parent of the per-dataset folder")
    pr.add_argument("--count-only", action="store_true", help="count tokens, write nothing else")
    pr.add_argument("--skip-count", action="store_true")
    pr.add_argument("--skip-tokenize", action="store_true")
    pr.add_argument("--num-proc", type=int, default=1, help="processes for loading/exporting")
    pr.add_argument(
        "--tokenize-workers", type=_workers, default=None, help="default: allocated CPUs"
    )
    pr.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    pr.add_argument("--append-eod", action="store_true")
    pr.add_argument("--chat-template")
    _add_tokenizer_args(pr)
    return parser


def _keys(args: argparse.Namespace) -> list[str]:
    keys: list[str] = []
    for k in args.jsonl_keys or []:
        keys.extend(x for x in k.split(",") if x)
    if keys:
        return keys
    if args.mode == "dpo":
        return ["chosen", "rejected"]
    if args.mode in ("chat", "kto"):
        return ["messages"]
    return ["text"]


def _inputs(raw: list[str]) -> list[str]:
    return [x for item in raw for x in item.split(",") if x]


def _tokenizer_spec(args: argparse.Namespace) -> Any:
    from neox_data.tokenizer import TokenizerSpec

    return TokenizerSpec(
        tokenizer_type=args.tokenizer_type,
        vocab_file=args.vocab_file,
        merge_file=args.merge_file,
        tokenizer_path=args.tokenizer_path,
        eod_token=args.eod_token,
    )


def _encode_config(args: argparse.Namespace) -> Any:
    from neox_data.chat import ChatOptions
    from neox_data.encoding import EncodeConfig, chat_mode_for

    keys = tuple(_keys(args))
    mode = chat_mode_for(keys) if args.mode == "auto" else args.mode
    flags = [f for f in ("only_last", "no_mask", "for_rm") if getattr(args, f, False)]
    if len(flags) > 1:
        raise SystemExit(f"error: choose one of --only-last, --no-mask, --for-rm (got {flags})")
    mask = {"only_last": "last", "no_mask": "none", "for_rm": "rm"}.get(flags[0] if flags else "")
    if mode == "dpo":
        mask = mask or "last"  # GPT-NeoX's DPO recipe tokenizes chosen/rejected with --only-last
    chat = ChatOptions(
        mask=mask or "assistant",
        generation_role=getattr(args, "generation_role", "assistant"),
        chat_template_file=args.chat_template,
    )
    return EncodeConfig(
        tokenizer=_tokenizer_spec(args),
        keys=keys,
        mode=mode,
        append_eod=args.append_eod,
        chat=chat,
        prompt_key=getattr(args, "prompt_key", "prompt"),
        kto_label_key=getattr(args, "kto_label_key", "label"),
    )


def cmd_tokenize(args: argparse.Namespace) -> int:
    from neox_data.tokenize import tokenize

    if args.dataset_impl != "mmap":
        raise SystemExit(f"error: --dataset-impl {args.dataset_impl}: only mmap is supported")
    result = tokenize(
        _inputs(args.input),
        args.output_prefix,
        _encode_config(args),
        workers=args.workers,
        on_error=args.on_error,
        num_docs=args.num_docs,
        subset=args.subset,
        split=args.split,
        log_interval_s=args.log_interval,
    )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    print(f"{result.documents} documents in {result.seconds:.1f} s, {result.skipped} skipped")
    for name, prefix in result.outputs.items():
        print(f"  {prefix}.bin/.idx: {result.tokens[name]:,} tokens")
    for err in result.errors:
        print(f"  skipped {err}")
    return 0


def cmd_count(args: argparse.Namespace) -> int:
    from neox_data.stats import dataset_stats, length_stats, resolve_prefixes

    report: dict[str, Any] = {}
    for target in args.target:
        for prefix in resolve_prefixes(target):
            report[prefix] = dataset_stats(prefix)
    if args.input:
        import numpy as np

        from neox_data.tokenize import tokenize

        lengths: list[Any] = []
        res = tokenize(
            _inputs(args.input),
            "",
            _encode_config(args),
            workers=args.workers,
            on_error=args.on_error,
            subset=args.subset,
            split=args.split,
            quiet=True,
            write=False,
            lengths_out=lengths,
        )
        stats = length_stats(np.concatenate(lengths) if lengths else np.zeros(0))
        stats["skipped"] = res.skipped
        report[",".join(_inputs(args.input))] = stats
    if not report:
        raise SystemExit("error: give dataset prefixes or --input")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, s in report.items():
        print(f"{name}: {s['documents']:,} documents, {s['tokens']:,} tokens")
        if s["documents"]:
            print(
                f"  length min {s['min_length']} / mean {s['mean_length']} / "
                f"median {s['median_length']} / max {s['max_length']}"
            )
        for b in s["histogram"]:
            print(f"  {b['min']:>9}-{b['max']:<9} {b['documents']:,}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from neox_data.indexed_dataset import MMapIndexedDataset, verify
    from neox_data.stats import dataset_stats, resolve_prefixes

    tokenizer = None
    if not args.raw and (
        args.vocab_file or args.tokenizer_path or args.tokenizer_type != "HFTokenizer"
    ):
        from neox_data.tokenizer import build_tokenizer

        tokenizer = build_tokenizer(_tokenizer_spec(args))
    vocab = tokenizer.vocab_size if tokenizer else None
    report: dict[str, Any] = {}
    bad = False
    for prefix in resolve_prefixes(args.prefix):
        stats = dataset_stats(prefix)
        is_label = prefix.endswith("_label_document") or prefix.endswith("_reward_document")
        problems = verify(prefix, None if is_label else vocab)
        bad = bad or bool(problems)
        stats["problems"] = problems
        docs = args.doc if args.doc else list(range(min(args.docs, stats["documents"])))
        shown = []
        with MMapIndexedDataset(prefix) as ds:
            for d in docs:
                ids = ds.document(d).tolist()
                entry: dict[str, Any] = {"document": d, "tokens": len(ids)}
                if tokenizer is not None and not is_label:
                    entry["text"] = tokenizer.decode(ids)
                elif tokenizer is not None and prefix.endswith("_label_document"):
                    entry["trained_text"] = tokenizer.decode([t for t in ids if t != -100])
                else:
                    entry["ids"] = ids
                shown.append(entry)
        stats["shown"] = shown
        report[prefix] = stats
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 1 if bad else 0
    for prefix, s in report.items():
        print(
            f"{prefix}: {s['dtype']}, {s['documents']:,} documents, {s['items']:,} items, "
            f"{s['tokens']:,} tokens"
        )
        if "masked_tokens" in s:
            print(
                f"  labels: {s['trained_tokens']:,} trained, {s['masked_tokens']:,} masked (-100)"
            )
        print("  verify: " + ("ok" if not s["problems"] else "; ".join(s["problems"])))
        for e in s["shown"]:
            body = e.get("text", e.get("trained_text", e.get("ids")))
            print(f"  --- document {e['document']} ({e['tokens']} tokens)")
            print(body if isinstance(body, str) else " ".join(map(str, body)))
    return 1 if bad else 0


def cmd_merge(args: argparse.Namespace) -> int:
    from neox_data.indexed_dataset import MMapIndexedDataset, merge_datasets

    merge_datasets(args.inputs, args.output_prefix)
    with MMapIndexedDataset(args.output_prefix) as ds:
        print(f"{args.output_prefix}: {ds.num_docs:,} documents, {ds.num_tokens:,} tokens")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from neox_data.verify import verify_with_summary

    vocab = args.vocab_size
    if args.tokenizer:
        from neox_data.tokenizer import TokenizerSpec, build_tokenizer

        vocab = build_tokenizer(TokenizerSpec(tokenizer_path=args.tokenizer)).vocab_size
    if vocab is not None and vocab < 1:
        raise ValueError(f"--vocab-size must be at least 1, got {vocab}")
    bad = False
    for prefix in args.prefixes:
        problems, s = verify_with_summary(prefix, vocab)
        for line in problems:
            print(line)
        if problems:
            bad = True
            continue
        ids = f", token ids < {vocab}" if vocab is not None and s.dtype.kind in "iu" else ""
        print(
            f"{prefix}: OK ({s.dtype}, {s.documents:,} documents, {s.items:,} items, "
            f"{s.tokens:,} tokens{ids})"
        )
    return 1 if bad else 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from neox_data.prepare import PrepareOptions, prepare

    results = prepare(
        PrepareOptions(
            dataset=args.dataset,
            subset=args.subset,
            split=args.split,
            output_dir=args.output_dir,
            count_only=args.count_only,
            skip_count=args.skip_count,
            skip_tokenize=args.skip_tokenize,
            num_proc=args.num_proc,
            tokenize_workers=args.tokenize_workers,
            on_error=args.on_error,
            append_eod=args.append_eod,
            chat_template=args.chat_template,
            tokenizer=_tokenizer_spec(args),
        )
    )
    print(json.dumps(results, indent=2))
    return 0


COMMANDS = {
    "tokenize": cmd_tokenize,
    "count": cmd_count,
    "inspect": cmd_inspect,
    "merge": cmd_merge,
    "verify": cmd_verify,
    "prepare": cmd_prepare,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("neox-data: interrupted; no partial outputs were kept", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"neox-data {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
