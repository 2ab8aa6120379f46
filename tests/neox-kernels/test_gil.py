"""The C++ loops release the GIL: Python threads keep running while an index builds."""

from __future__ import annotations

import threading
import time

import numpy as np

from neox_kernels import index


def test_python_thread_runs_while_blending_index_builds() -> None:
    # Many datasets make a long loop with small arrays (about 0.3-1 s, 20 MB).
    weights = np.linspace(1.0, 2.0, 254)
    ticks: list[float] = []
    done = threading.Event()

    def build() -> None:
        try:
            index.build_blending_indices(weights, 2_000_000)
        finally:
            done.set()

    worker = threading.Thread(target=build)
    start = time.perf_counter()
    worker.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.002)
    worker.join()
    elapsed = time.perf_counter() - start
    gaps = np.diff([start, *ticks, time.perf_counter()])
    # Holding the GIL would stall this thread for the whole build.
    assert elapsed > 0.1, "build too short to tell"
    assert gaps.max() < elapsed / 2, (gaps.max(), elapsed)
