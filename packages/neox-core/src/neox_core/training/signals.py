"""SIGTERM / SIGUSR1 ask the loop to stop after the current step, save, and exit 0.

SLURM sends SIGTERM at preemption and (with `--signal=USR1@<secs>`) SIGUSR1 before the
time limit; finishing the step and saving lets a requeued job resume from `latest`. A later
signal gets the default action (termination), so a run stuck after the first can still be
killed; a repeat within `duplicate_window_s` is ignored, because at preemption SLURM signals
every process of the step and torchrun forwards the same signal to its workers, so a worker
receives it twice at once and must still save.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Set by a signal handler, polled by the training loop between steps."""

    duplicate_window_s = 5.0

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None
        self._first_at = 0.0
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequest:
        if threading.current_thread() is not threading.main_thread():
            return self  # handlers can only be installed from the main thread
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._event.is_set():
            if time.monotonic() - self._first_at < self.duplicate_window_s:
                return  # the same stop request delivered twice (scheduler + launcher)
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(signum)  # now handled by the default action
            return
        self.signal_name = signal.Signals(signum).name
        self._first_at = time.monotonic()
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()
