"""Fork-server for fault tests: imports torch and neox-train once, then forks the real
`neox-train` (`neox_core.cli.main`) per run, so 20 kills cost 20 forks, not 20 start-ups.

Protocol (one line per command on stdin, one JSON line per answer on stdout):
`kill <seed> <ranks> <save dir> <config>...`: run neox-train on the configs, SIGKILL it at a random moment
of its second save: after its first ` > saved checkpoint ... in S s` line, wait one step (the
time from ` > training ...` to that line, less S) and a random part of S (-15% to 115%); odd seeds
instead kill as soon as that save's temporary directory appears. Answer `{"rc", "mid_save",
"resumed", "saves", "tail"}`.
`run <config>...`: run it to the end, answer `{"rc", "tail"}`.
`warm <config>...`: run it here, once, so every lazy import and first-call cost is paid
before forking (the trainer runs with one thread, so forking after torch ran is safe).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import neox_core.cli
import neox_core.training.run

SAVED = re.compile(r" > saved checkpoint .* in ([0-9.]+) s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the trainer: its stdout and stderr go into the pipe
        os.environ.update(env or {})
        os.close(r)
        os.dup2(w, 1)
        os.dup2(w, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = sys.stdout
        try:
            rc = neox_core.cli.main(argv)
        except BaseException as e:
            print(f"zygote child: {type(e).__name__}: {e}", flush=True)
            rc = 99
        sys.stdout.flush()
        os._exit(int(rc or 0))
    os.close(w)
    return pid, r


def kill_run(seed: int, configs: list[str], save: Path, world: int = 1) -> dict:
    """With `world` 2, two ranks get the environment torchrun gives its workers (RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); a random rank is killed, and the other, like
    torchrun does, a moment later."""
    rng = random.Random(seed)
    port = str(_free_port())
    ranks = []
    for rank in range(world):
        env = {}
        if world > 1:
            env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                   "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": port}  # fmt: skip
        ranks.append(_start(configs, env))
    for _, fd in ranks[1:]:  # only rank 0 logs; drain the others in the background
        threading.Thread(target=_drain, args=(fd,), daemon=True).start()
    _, fd = ranks[0]
    lines: list[str] = []
    saves: list[float] = []
    started = time.perf_counter()
    target = 1
    buf = b""
    with os.fdopen(fd, "rb", buffering=0) as out:
        while len(saves) < target:
            chunk = out.read(65536)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            for raw in done:
                line = raw.decode(errors="replace")
                lines.append(line)
                if line.startswith(" > training ..."):
                    started = time.perf_counter()
                if " > saved checkpoint " in line:
                    saves.append(time.perf_counter())
        if len(saves) < target:  # exited by itself
            codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p, _ in ranks]
            return {"rc": codes[0], "tail": lines[-20:]}
        # one step and one save took `cycle`, the save `took` of it (its log line says): aim
        # at a random moment of the next save, a little before and after it included
        took = float(SAVED.search(next(x for x in lines if SAVED.search(x))).group(1))
        step = max(saves[0] - started - took, 0.0)
        ours = f".tmp-global_step*-{ranks[0][0]}"  # rank 0 names the save's temporary directory
        if seed % 2:
            # every other run waits for the next save's temporary directory and kills at once,
            # so a loaded machine (whose step times wander) still gets kills inside a save
            deadline = time.perf_counter() + 10 * (step + took) + 10
            while not any(save.glob(ours)) and time.perf_counter() < deadline:
                time.sleep(0.002)
        else:
            time.sleep(step + rng.uniform(-0.15, 1.15) * took if step + took > 0 else 0)
        mid_save = any(save.glob(ours))
        victim = rng.randrange(world)
        os.kill(ranks[victim][0], signal.SIGKILL)
        if world > 1:
            time.sleep(0.2)
            for i, (p, _) in enumerate(ranks):
                if i != victim:
                    os.kill(p, signal.SIGKILL)
        codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p, _ in ranks]
    return {
        "rc": codes[victim],
        "mid_save": mid_save,
        "resumed": any("resumed from" in line for line in lines),
        "saves": len(saves),
        "tail": lines[-5:],
    }


def _drain(fd: int) -> None:
    with os.fdopen(fd, "rb") as f:
        while f.read(65536):
            pass


def full_run(configs: list[str]) -> dict:
    pid, fd = _start(configs)
    with os.fdopen(fd, "rb") as out:
        text = out.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    return {"rc": os.waitstatus_to_exitcode(status), "tail": text.splitlines()[-30:]}


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "warm":
            with open(os.devnull, "w") as null:
                saved, sys.stdout = sys.stdout, null
                try:
                    rc = neox_core.cli.main(args)
                finally:
                    sys.stdout = saved
            answer = {"rc": rc}
        elif cmd == "kill":
            seed, world, save, *configs = args
            answer = kill_run(int(seed), configs, Path(save), int(world))
        else:
            answer = full_run(args)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
