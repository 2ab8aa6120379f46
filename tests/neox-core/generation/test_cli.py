"""`neox-generate`: GPT-NeoX's modes, its output records, stop strings, seeds, bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from neox_core.generation.cli import main
from neox_core.generation.loading import load_inference_config
from neox_core.generation.run import run_generation
from neox_core.generation.samples import PromptFileError, read_prompts

TOKENIZER = Path(__file__).resolve().parents[3] / "examples" / "tiny" / "tokenizer.json"
FIELDS = {"context", "text", "length", "finished", "message", "duration_seconds"}


def _gen_yml(tmp_path, **keys) -> str:
    path = tmp_path / f"gen{len(list(tmp_path.glob('gen*.yml')))}.yml"
    path.write_text(json.dumps(keys))
    return str(path)


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from neox_core.generation.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "text_gen_type" in out.stdout


def test_input_file_writes_gpt_neox_records(inference_checkpoints, tmp_path, capsys) -> None:
    ck = inference_checkpoints["pythia"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat\n\n  Once upon a time  \nHello")
    out = tmp_path / "out" / "samples.jsonl"
    gen = _gen_yml(
        tmp_path,
        text_gen_type="input-file",
        sample_input_file=str(prompts),
        sample_output_file=str(out),
        maximum_tokens=6,
    )
    assert main([*ck.configs, gen, "--batch-size", "2", "--device", "cpu"]) == 0
    records = _records(out)
    assert [r["context"] for r in records] == ["The cat sat", "Once upon a time", "Hello"]
    assert all(set(r) == FIELDS for r in records)
    assert all(r["length"] == 6 and r["finished"] is False for r in records)
    # greedy: the same file again gives the same text, one prompt at a time too
    assert main([*ck.configs, gen, "--device", "cpu", "--sample-output-file", str(out) + "2"]) == 0
    assert [r["text"] for r in _records(tmp_path / "out" / "samples.jsonl2")] == [
        r["text"] for r in records
    ]
    assert "wrote 3 sample(s)" in capsys.readouterr().out


def test_unconditional_sampling_is_seeded(inference_checkpoints, tmp_path) -> None:
    ck = inference_checkpoints["llama"]
    out = tmp_path / "samples.jsonl"
    gen = _gen_yml(
        tmp_path,
        text_gen_type="unconditional",
        num_samples=3,
        maximum_tokens=8,
        temperature=1.0,
        top_k=50,
        top_p=0.9,
        sample_output_file=str(out),
    )

    def texts(seed: str) -> list[str]:
        assert main([*ck.configs, gen, "--device", "cpu", "--seed", seed]) == 0
        records = _records(out)
        assert [r["context"] for r in records] == ["", "", ""]
        return [r["text"] for r in records]

    first = texts("7")
    assert texts("7") == first
    assert texts("8") != first


def test_stop_strings_cut_the_text_and_finish(inference_checkpoints, tmp_path) -> None:
    ck = inference_checkpoints["pythia"]
    cfg = load_inference_config(
        list(ck.configs), {"maximum_tokens": 12, "text_gen_type": "input-file"}
    )
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"text": "The cat sat"}) + "\n")
    cfg.generation.sample_input_file = str(prompts)
    cfg.generation.sample_output_file = str(tmp_path / "free.jsonl")
    run_generation(cfg, device="cpu", stdout=io.StringIO())
    free = _records(tmp_path / "free.jsonl")[0]
    assert len(free["text"]) > 2
    stop = free["text"][1:3]  # a piece of what greedy decoding writes
    cfg.generation.stop_strings = [stop]
    cfg.generation.sample_output_file = str(tmp_path / "stopped.jsonl")
    run_generation(cfg, device="cpu", stdout=io.StringIO())
    stopped = _records(tmp_path / "stopped.jsonl")[0]
    assert stopped["finished"] is True
    assert stopped["text"] == free["text"][: free["text"].find(stop)]


def test_interactive_reads_prompts_until_exit(inference_checkpoints, tmp_path) -> None:
    ck = inference_checkpoints["pythia"]
    cfg = load_inference_config(
        list(ck.configs), {"text_gen_type": "interactive", "maximum_tokens": 4}
    )
    stdout = io.StringIO()
    run_generation(
        cfg, device="cpu", stdin=io.StringIO("Hello\nThe cat\nexit\nnot read\n"), stdout=stdout
    )
    assert stdout.getvalue().count("Generated Text: ") == 2


def test_prompt_files_are_split_and_checked(tmp_path) -> None:
    plain = tmp_path / "p.txt"
    plain.write_text("a|| b ||\n||c")
    assert read_prompts(plain, "||") == ["a", "b", "c"]
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"text": "ok"}\n\n{"txt": "no"}\n')
    with pytest.raises(
        PromptFileError, match=r"p\.jsonl:3: expected an object with a string 'text'"
    ):
        read_prompts(bad, "\n")
    with pytest.raises(PromptFileError, match="does not exist"):
        read_prompts(tmp_path / "missing.txt", "\n")


def test_bad_config_and_missing_checkpoint_are_errors(tmp_path, capsys) -> None:
    bad = _gen_yml(tmp_path, top_p=1.5, vocab_size=100, pos_emb="rotary")
    assert main([bad]) == 2
    assert "top_p = 1.5: must be in [0, 1]" in capsys.readouterr().err
    no_tokenizer = _gen_yml(tmp_path, vocab_size=100, pos_emb="rotary")
    assert main([no_tokenizer, "--device", "cpu"]) == 2
    assert "GPT2BPETokenizer needs --vocab-file" in capsys.readouterr().err
    tokenizer = {"tokenizer_type": "HFTokenizer", "vocab_file": str(TOKENIZER)}
    nothing = _gen_yml(tmp_path, pos_emb="rotary", **tokenizer)
    assert main([nothing, "--device", "cpu"]) == 2
    assert "no checkpoint to load: set `load`" in capsys.readouterr().err
    missing = _gen_yml(tmp_path, pos_emb="rotary", load=str(tmp_path), **tokenizer)
    assert main([missing, "--device", "cpu"]) == 2
    assert "latest does not exist" in capsys.readouterr().err
