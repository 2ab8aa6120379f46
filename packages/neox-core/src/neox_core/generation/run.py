"""What `neox-generate` does once its config is read: load, generate in the chosen mode, write."""

from __future__ import annotations

import sys
from typing import TextIO

from neox_core.config.schema import NeoxConfig
from neox_core.generation.loading import build_tokenizer_for, load_inference_model
from neox_core.generation.samples import (
    PromptFileError,
    TextGenerator,
    interactive,
    read_prompts,
    write_samples,
)
from neox_core.generation.sampling import SamplingParams


def text_generator(
    cfg: NeoxConfig, model, tokenizer, seed: int, batch_size: int, compile: bool | None = None
) -> TextGenerator:
    g = cfg.generation
    return TextGenerator(
        model,
        tokenizer,
        max_new_tokens=g.maximum_tokens,
        params=SamplingParams(g.temperature, g.top_k, g.top_p),
        max_length=cfg.data.seq_length,
        seed=seed,
        batch_size=batch_size,
        stop_strings=g.stop_strings or (),
        recompute=g.recompute,
        compile=compile,
    )


def run_generation(
    cfg: NeoxConfig,
    *,
    load_dir: str | None = None,
    iteration: int | None = None,
    seed: int | None = None,
    batch_size: int = 1,
    device: str | None = None,
    dtype: str | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    compile: bool | None = None,
) -> int:
    """Run `cfg.generation.text_gen_type`; returns the process exit code.

    `compile`: compile the decode step (None: on CUDA yes, on CPU no).
    """
    g = cfg.generation
    stdout = stdout or sys.stdout
    if g.text_gen_type == "input-file" and not g.sample_input_file:
        raise PromptFileError("text_gen_type input-file needs sample_input_file")
    prompts = (
        read_prompts(g.sample_input_file, g.prompt_end) if g.text_gen_type == "input-file" else []
    )
    tokenizer = build_tokenizer_for(cfg)
    loaded = load_inference_model(
        cfg, load_dir=load_dir, iteration=iteration, device=device, dtype=dtype
    )
    seed = cfg.training.seed if seed is None else seed
    gen = text_generator(cfg, loaded.model, tokenizer, seed, batch_size, compile)
    stdout.write(f"neox-generate: {loaded.checkpoint} (iteration {loaded.iteration})\n")
    if g.text_gen_type == "interactive":
        interactive(gen, stdin or sys.stdin, stdout)
        return 0
    contexts = prompts if g.text_gen_type == "input-file" else [""] * g.num_samples
    samples = gen.complete(contexts)
    write_samples(g.sample_output_file, samples)
    stdout.write(f"neox-generate: wrote {len(samples)} sample(s) to {g.sample_output_file}\n")
    return 0
