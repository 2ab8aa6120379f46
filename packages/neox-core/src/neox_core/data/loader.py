"""Data loading that resumes at an exact sample and keeps the device fed.

Samples are consumed in dataset order (the shuffling lives in the index maps); each
data-parallel rank takes its slice of every global micro-batch, as GPT-NeoX's
DistributedBatchSampler does. Workers prefetch; on CUDA batches come in pinned memory.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import torch


class ResumableBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Endless micro-batches of indices starting at sample `start`, wrapping at the end."""

    def __init__(
        self,
        dataset_len: int,
        micro_batch_size: int,
        dp_rank: int = 0,
        dp_size: int = 1,
        start: int = 0,
    ) -> None:
        self.global_batch = micro_batch_size * dp_size
        if dataset_len < self.global_batch:
            raise ValueError(
                f"dataset has {dataset_len} samples, fewer than one global micro-batch "
                f"({self.global_batch})"
            )
        self.usable = dataset_len - dataset_len % self.global_batch  # drop_last
        self.micro, self.rank = micro_batch_size, dp_rank
        self.start = start % self.usable

    def __iter__(self) -> Iterator[list[int]]:
        pos = self.start
        while True:
            first = pos + self.rank * self.micro
            yield list(range(first, first + self.micro))
            pos = (pos + self.global_batch) % self.usable


def _ignore_checkpoint_signal(_worker_id: int) -> None:
    """SLURM signals every process of a step; only the trainer acts on SIGUSR1.

    A forked worker inherits the trainer's handler, but a spawned or forkserver one would
    die of the signal's default action and take the run down before it can checkpoint.
    """
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def make_loader(
    dataset: torch.utils.data.Dataset,
    *,
    micro_batch_size: int,
    start_sample: int = 0,
    dp_rank: int = 0,
    dp_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
    multiprocessing_context: str | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """An endless iterator of collated micro-batches, the first at global sample `start_sample`."""
    sampler = ResumableBatchSampler(
        len(dataset),
        micro_batch_size,
        dp_rank,
        dp_size,
        start_sample,  # type: ignore[arg-type]
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
        prefetch_factor=4 if num_workers > 0 else None,
        worker_init_fn=_ignore_checkpoint_signal if num_workers > 0 else None,
        # its own generator: iterating must not draw from the global torch RNG, which a
        # resumed run restores from the checkpoint (dropout would drift otherwise)
        generator=torch.Generator().manual_seed(0),
    )
    return iter(loader)
