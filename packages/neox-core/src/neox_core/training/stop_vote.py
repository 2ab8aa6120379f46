"""All ranks agree to stop at the same iteration without the host waiting for each step.

Every rank must leave the loop at the same step: one breaking alone would wait in save()'s
barrier while the others wait in the next step's collectives. Synced steps agree through
their host all-reduce of the loss and the stop flag. Deferred steps (training/step.py) leave
the host free to run ahead of the GPU, so each rank adds its flag to a sum all-reduced on the
device, and the loop reads that sum one step late: by then the GPU has finished that step
while the next one is queued, so the read drains nothing. A signal thus stops the run one
step later than with synced steps.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.distributed as dist


class StopVote:
    """Each step's vote is cast with `cast`; `agreed` reads the vote before the last one."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._votes: deque[tuple[torch.Tensor, torch.cuda.Event | None]] = deque()

    def cast(self, requested: bool) -> None:
        """This rank's stop request for the step just launched, summed over all ranks."""
        flag = torch.full((1,), float(requested), dtype=torch.float32, device=self._device)
        dist.all_reduce(flag)  # NCCL: queued on the stream, the host goes on
        done = None
        if flag.is_cuda:
            host = torch.empty(1, dtype=torch.float32, pin_memory=True)
            host.copy_(flag, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            flag = host
        self._votes.append((flag, done))

    def agreed(self) -> bool:
        """Whether any rank asked to stop by the vote before the last one cast (every rank
        reads the same vote at the same iteration); False until two votes were cast."""
        if len(self._votes) < 2:
            return False
        flag, done = self._votes.popleft()
        if done is not None:
            done.synchronize()
        return flag.item() > 0
