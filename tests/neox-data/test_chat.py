"""Chat mode: tokens and labels against GPT-NeoX's algorithm run on a transformers tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neox_data.cli import main
from neox_data.indexed_dataset import MMapIndexedDataset

CHATS = [
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is two plus two?"},
        {"role": "assistant", "content": "four."},
        {"role": "user", "content": "And café?"},
        {"role": "assistant", "content": "東京 🙂"},
    ],
    [
        {"role": "user", "content": "Hello world!"},
        {"role": "assistant", "content": "The quick brown fox."},
    ],
    # ends with the user: not trained even under --only-last
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one, please."},
    ],
]


def gpt_neox_build_chat(tok, chat, mask: str) -> tuple[list[int], list[int]]:
    """GPT-NeoX's build_chat (preprocess_data_with_chat_template.py) with a HF tokenizer."""

    def ids(msgs, add_gen=False):
        return tok.apply_chat_template(
            msgs, tokenize=True, return_dict=False, add_generation_prompt=add_gen
        )

    eos = tok.eos_token_id
    if mask == "none":
        tokens = ids(chat)
        return [*tokens, eos], [*tokens, eos]
    if mask == "rm":  # build_chat(for_rm=True): two EOS, only the second one labelled
        tokens = ids(chat)
        return [*tokens, eos, eos], [-100] * (len(tokens) + 1) + [eos]
    tokens, labels = [], []
    for i, turn in enumerate(chat):
        add_gen = False if i == len(chat) - 1 else chat[i + 1]["role"] == "assistant"
        new = ids(chat[: i + 1], add_gen)[len(tokens) :]
        tokens.extend(new)
        if (mask == "last" and i != len(chat) - 1) or turn["role"] != "assistant":
            labels.extend([-100] * len(new))
        else:
            labels.extend(new)
    labels.append(eos if labels[-1] != -100 else -100)
    tokens.append(eos)
    return tokens, labels


def docs(prefix: str) -> list[list[int]]:
    ds = MMapIndexedDataset(prefix)
    assert ds.dtype.name == "int32"
    return [ds.document(i).tolist() for i in range(ds.num_docs)]


@pytest.fixture(scope="module")
def auto_tok(tok_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tok_dir))


@pytest.mark.parametrize(
    ("flag", "mask"),
    [(None, "assistant"), ("--only-last", "last"), ("--no-mask", "none"), ("--for-rm", "rm")],
)
def test_labels_match_gpt_neox(tok_dir: Path, auto_tok, tmp_path: Path, flag, mask) -> None:
    src = tmp_path / "chat.jsonl"
    src.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CHATS), encoding="utf-8")
    args = ["tokenize", "--input", str(src), "--output-prefix", str(tmp_path / "o")]
    args += ["--tokenizer-path", str(tok_dir), "--jsonl-keys", "messages", "--workers", "2"]
    assert main(args + ([flag] if flag else [])) == 0
    expected = [gpt_neox_build_chat(auto_tok, c, mask) for c in CHATS]
    assert docs(f"{tmp_path}/o_messages_document") == [t for t, _ in expected]
    labels = docs(f"{tmp_path}/o_messages_label_document")
    assert labels == [lab for _, lab in expected]
    if mask == "last":  # the last turn is the user's, so nothing of that chat is trained
        assert set(labels[2]) == {-100}


def test_chat_round_trip_through_inspect(tok_dir: Path, auto_tok, tmp_path: Path, capsys) -> None:
    src = tmp_path / "chat.jsonl"
    src.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CHATS), encoding="utf-8")
    main(
        [
            "tokenize",
            "--input",
            str(src),
            "--output-prefix",
            str(tmp_path / "o"),
            "--tokenizer-path",
            str(tok_dir),
            "--jsonl-keys",
            "messages",
        ]
    )
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "o"), "--tokenizer-path", str(tok_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    texts = [e["text"] for e in report[f"{tmp_path}/o_messages_document"]["shown"]]
    rendered = [auto_tok.apply_chat_template(c, tokenize=False) + "<|endoftext|>" for c in CHATS]
    assert texts == rendered
    for chat, text in zip(CHATS, texts, strict=True):
        for m in chat:
            assert m["content"] in text
    trained = [e["trained_text"] for e in report[f"{tmp_path}/o_messages_label_document"]["shown"]]
    assert trained[1] == "The quick brown fox.<|im_end|>\n<|endoftext|>"


def test_template_file_overrides_and_unstable_template_fails(
    tok_dir: Path, tmp_path: Path, capsys
) -> None:
    src = tmp_path / "chat.jsonl"
    src.write_text(json.dumps({"messages": CHATS[1]}) + "\n", encoding="utf-8")
    plain = tmp_path / "plain.jinja"
    plain.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    base = ["tokenize", "--input", str(src), "--tokenizer-path", str(tok_dir)]
    base += ["--jsonl-keys", "messages"]
    assert main([*base, "--output-prefix", str(tmp_path / "p"), "--chat-template", str(plain)]) == 0
    # a template that renders the turn count up front changes earlier tokens every turn
    unstable = tmp_path / "unstable.jinja"
    unstable.write_text(
        "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    rc = main([*base, "--output-prefix", str(tmp_path / "u"), "--chat-template", str(unstable)])
    assert rc == 2
    assert (
        f"{src}:1: key 'messages': the chat template is not prefix-stable"
        in capsys.readouterr().err
    )


def test_bad_messages_are_located(tok_dir: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "chat.jsonl"
    src.write_text(
        json.dumps({"messages": CHATS[1]})
        + "\n"
        + json.dumps({"messages": [{"role": "user"}]})
        + "\n"
    )
    rc = main(
        [
            "tokenize",
            "--input",
            str(src),
            "--output-prefix",
            str(tmp_path / "o"),
            "--tokenizer-path",
            str(tok_dir),
            "--jsonl-keys",
            "messages",
        ]
    )
    assert rc == 2
    assert f"{src}:2: key 'messages': message 0 is not an object with 'role' and 'content'" in (
        capsys.readouterr().err
    )


def test_lone_surrogate_in_a_message_is_a_located_record_error(
    tok_dir: Path, auto_tok, tmp_path: Path, capsys
) -> None:
    src = tmp_path / "chat.jsonl"
    bad = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x \udc80"}]
    # json.dumps writes the lone surrogate as the escape "\udc80": valid JSON
    src.write_text(
        "".join(json.dumps({"messages": c}) + "\n" for c in [CHATS[1], bad, CHATS[0]]),
        encoding="utf-8",
    )
    args = ["tokenize", "--input", str(src), "--output-prefix", str(tmp_path / "o")]
    args += ["--tokenizer-path", str(tok_dir), "--jsonl-keys", "messages", "--on-error", "skip"]
    assert main(args) == 0
    assert (
        f"{src}:2: key 'messages': message 1: 'content': lone surrogate U+DC80 at character 2"
        in capsys.readouterr().out  # skip mode lists the skipped records in its summary
    )
    expected = [gpt_neox_build_chat(auto_tok, c, "assistant")[0] for c in (CHATS[1], CHATS[0])]
    assert docs(f"{tmp_path}/o_messages_document") == expected


def test_dpo_pairs(tok_dir: Path, auto_tok, tmp_path: Path) -> None:
    prompt = [{"role": "user", "content": "What is two plus two?"}]
    rows = [
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": "four."}],
            "rejected": [{"role": "assistant", "content": "five."}],
        }
    ] * 2
    # GPT-NeoX's own layout: chosen/rejected are whole conversations, no prompt key
    rows.append(
        {
            "chosen": [*prompt, {"role": "assistant", "content": "four."}],
            "rejected": [*prompt, {"role": "assistant", "content": "five."}],
        }
    )
    src = tmp_path / "dpo.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        main(
            [
                "tokenize",
                "--input",
                str(src),
                "--output-prefix",
                str(tmp_path / "d"),
                "--mode",
                "dpo",
                "--tokenizer-path",
                str(tok_dir),
            ]
        )
        == 0
    )
    for side, answer in (("chosen", "four."), ("rejected", "five.")):
        chat = [*prompt, {"role": "assistant", "content": answer}]
        tokens, labels = gpt_neox_build_chat(auto_tok, chat, "last")
        assert docs(f"{tmp_path}/d_{side}_document") == [tokens] * 3
        assert docs(f"{tmp_path}/d_{side}_label_document") == [labels] * 3


def test_kto_reward_file(tok_dir: Path, tmp_path: Path) -> None:
    rows = [{"messages": CHATS[1], "label": True}, {"messages": CHATS[1], "label": False}]
    src = tmp_path / "kto.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(
        [
            "tokenize",
            "--input",
            str(src),
            "--output-prefix",
            str(tmp_path / "k"),
            "--mode",
            "kto",
            "--tokenizer-path",
            str(tok_dir),
        ]
    )
    tokens = docs(f"{tmp_path}/k_messages_document")
    rewards = docs(f"{tmp_path}/k_messages_reward_document")
    assert rewards == [[1] * len(tokens[0]), [-1] * len(tokens[1])]
    assert len(docs(f"{tmp_path}/k_messages_label_document")) == 2


def test_parquet_conversations(tok_dir: Path, auto_tok, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"messages": CHATS}), tmp_path / "chats.parquet")
    main(
        [
            "tokenize",
            "--input",
            str(tmp_path / "chats.parquet"),
            "--output-prefix",
            str(tmp_path / "o"),
            "--tokenizer-path",
            str(tok_dir),
            "--jsonl-keys",
            "messages",
        ]
    )
    expected = [gpt_neox_build_chat(auto_tok, c, "assistant") for c in CHATS]
    assert docs(f"{tmp_path}/o_messages_label_document") == [lab for _, lab in expected]
