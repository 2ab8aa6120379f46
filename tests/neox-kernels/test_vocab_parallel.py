"""The vocabulary-parallel loss on 2 gloo ranks (torchrun) against the full-vocabulary loss."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

WORKER = Path(__file__).with_name("vocab_parallel_worker.py")


@pytest.mark.slow
def test_two_vocab_shards_give_the_full_loss_and_gradients(tmp_path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(WORKER), str(tmp_path)]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=600, cwd=WORKER.parent)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    sys.path.insert(0, str(WORKER.parent))
    from vocab_parallel_worker import Z, inputs

    hidden, weight, labels = inputs()
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logits = h @ w.T
    valid = labels != -100
    lse = torch.logsumexp(logits, -1)
    ref = F.cross_entropy(logits, labels) + Z * (lse**2 * valid).sum() / valid.sum()
    ref.backward()
    for loss, _, _ in results:  # every rank has the whole loss
        torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(results[0][1] + results[1][1], h.grad)  # summed over the group
    torch.testing.assert_close(torch.cat([results[0][2], results[1][2]]), w.grad)
