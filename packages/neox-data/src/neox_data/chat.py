"""Chat-template tokenization with loss labels, as GPT-NeoX's chat-template preprocessing does.

The chat is rendered turn by turn: after turn i the template is applied to the first i+1
messages (with the generation prompt when the next message is the model's), and the tokens
that rendering adds to the previous one belong to turn i. Labels copy the tokens of trained
turns and hold -100 elsewhere; one end-of-sequence token closes the chat and is trained when
the token before it is. Unlike GPT-NeoX we check that each rendering extends the previous
one, and fail loudly when a template is not prefix-stable instead of mislabelling tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from neox_data.tokenizer import Tokenizer

IGNORE_INDEX = -100
MaskMode = Literal["assistant", "last", "none", "rm"]


class ChatFormatError(ValueError):
    """A conversation the template cannot render or the labels cannot be derived for."""


@dataclass(frozen=True)
class ChatOptions:
    # GPT-NeoX default; "last" = --only-last, "none" = --no-mask, "rm" = --for-rm
    mask: MaskMode = "assistant"
    generation_role: str = "assistant"
    chat_template_file: str | None = None


def load_template(tokenizer: Tokenizer, template_file: str | None) -> str:
    if template_file is not None:
        path = Path(template_file)
        if not path.is_file():
            raise ChatFormatError(f"{path}: chat template file not found")
        return path.read_text(encoding="utf-8")
    if tokenizer.chat_template is None:
        raise ChatFormatError(
            "the tokenizer has no chat template (tokenizer_config.json 'chat_template' or "
            "chat_template.jinja); pass --chat-template FILE.jinja"
        )
    return tokenizer.chat_template


class ChatEncoder:
    """Renders conversations with a Jinja chat template and tokenizes them with labels."""

    def __init__(self, tokenizer: Tokenizer, options: ChatOptions) -> None:
        if tokenizer.hf_tokenizer is None:
            raise ChatFormatError(
                f"chat mode needs a HF-backed tokenizer (HFTokenizer, HFGPT2Tokenizer, "
                f"GPT2BPETokenizer), not {tokenizer.name}"
            )
        from transformers import PreTrainedTokenizerFast

        self._tok = tokenizer.hf_tokenizer
        self._options = options
        template = load_template(tokenizer, options.chat_template_file)
        special = {
            k: v
            for k, v in (("eos_token", tokenizer.eos_token), ("bos_token", tokenizer.bos_token))
            if v
        }
        self._hf = PreTrainedTokenizerFast(tokenizer_object=self._tok, **special)
        self._hf.chat_template = template
        eos_name = tokenizer.eos_token
        self.eos_id = tokenizer.token_id(eos_name) if eos_name else tokenizer.eod

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        try:
            return self._hf.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except Exception as e:  # jinja raises many types (TemplateError, TypeError, ...)
            raise ChatFormatError(f"chat template failed: {type(e).__name__}: {e}") from e

    def _ids(self, text: str) -> list[int]:
        # transformers tokenizes a rendered chat without adding special tokens.
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode(self, messages: Any) -> tuple[list[int], list[int]]:
        """(tokens, labels) of one conversation."""
        check_messages(messages)
        opts = self._options
        if opts.mask == "rm":
            # reward models, GPT-NeoX's layout: two closing EOS tokens, only the second one
            # labelled, so after the shift (inputs[:-1], labels[1:]) the one trained target
            # sits at the first EOS: the score is read after the whole chat and its EOS
            if self.eos_id is None:
                raise ChatFormatError("--for-rm needs an EOS token and the tokenizer has none")
            tokens = self._ids(self.render(messages, add_generation_prompt=False))
            eos = self.eos_id
            return [*tokens, eos, eos], [IGNORE_INDEX] * (len(tokens) + 1) + [eos]
        if opts.mask == "none":
            tokens = self._ids(self.render(messages, add_generation_prompt=False))
            labels = list(tokens)
            if self.eos_id is not None:
                tokens.append(self.eos_id)
                labels.append(self.eos_id)
            return tokens, labels
        tokens, labels = [], []
        last = len(messages) - 1
        for i, turn in enumerate(messages):
            add_gen = i < last and messages[i + 1]["role"] == opts.generation_role
            rendered = self._ids(self.render(messages[: i + 1], add_generation_prompt=add_gen))
            if rendered[: len(tokens)] != tokens:
                raise ChatFormatError(
                    f"the chat template is not prefix-stable at message {i}: rendering "
                    f"{i + 1} messages does not extend the tokens of the first {i} (templates "
                    "that rewrite earlier turns cannot be masked per turn: use --no-mask or "
                    "a prefix-stable --chat-template)"
                )
            new = rendered[len(tokens) :]
            tokens.extend(new)
            # GPT-NeoX: --only-last masks every turn but the last, and a turn not spoken by
            # generation_role is masked either way (a chat ending in a user turn trains nothing)
            trained = turn["role"] == opts.generation_role and (opts.mask != "last" or i == last)
            labels.extend(new if trained else [IGNORE_INDEX] * len(new))
        if self.eos_id is not None:
            tokens.append(self.eos_id)
            labels.append(self.eos_id if labels and labels[-1] != IGNORE_INDEX else IGNORE_INDEX)
        return tokens, labels


def utf8_problem(text: str) -> str | None:
    """Why `text` cannot be tokenized as UTF-8, or None.

    JSON may spell lone surrogates ("\\ud800"); Python keeps them in the str, and the
    tokenizer then fails without naming the record, so they are caught here instead.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"lone surrogate U+{ord(text[e.start]):04X} at character {e.start} (not valid UTF-8)"
    return None


def check_messages(messages: Any) -> None:
    if not isinstance(messages, list):
        raise ChatFormatError(f"expected a list of messages, got {type(messages).__name__}")
    if not messages:
        raise ChatFormatError("empty document: the message list is empty")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ChatFormatError(f"message {i} is not an object with 'role' and 'content'")
        if not isinstance(m["role"], str):
            raise ChatFormatError(
                f"message {i}: 'role' is {type(m['role']).__name__}, not a string"
            )
        if not isinstance(m["content"], str):
            raise ChatFormatError(
                f"message {i}: 'content' is {type(m['content']).__name__}, not a string"
            )
        for name in ("role", "content"):
            problem = utf8_problem(m[name])
            if problem is not None:
                raise ChatFormatError(f"message {i}: {name!r}: {problem}")
