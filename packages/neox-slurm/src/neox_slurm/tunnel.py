"""`neox-slurm tunnel`: a VS Code tunnel on a compute node, and what the user must do next.

`code tunnel` prints, when it is not logged in yet,
    To grant access to the server, please log into https://github.com/login/device and use
    code XXXX-XXXX
and once the tunnel is up
    Open this link in your browser https://vscode.dev/tunnel/<name>/<folder>
(older CLIs swapped the URL and the code in the first line; both orders are read). We follow
the job's log and print the two as soon as they appear.
"""

from __future__ import annotations

import codecs
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neox_slurm.follow import FINISHED_STATES, job_state

_LOGIN_LINE = re.compile(r"grant access|log ?in(to)?\b.*\bcode\b", re.IGNORECASE)
_DEVICE_CODE = re.compile(r"\b([A-Z0-9]{4,}-[A-Z0-9]{4,})\b")
_URL = re.compile(r"https://[^\s'\"<>]+")
_TUNNEL_LINK = re.compile(r"https://vscode\.dev/tunnel/[^\s'\"<>]+")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,20}$")

EXIT_LINK = 0
EXIT_JOB_ENDED = 1
EXIT_TIMEOUT = 3


def default_tunnel_name(user: str) -> str:
    """`neox-<user>`, cut to the 20 characters the tunnel service allows."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", f"neox-{user}")
    return name[:20].rstrip("-") or "neox"


def tunnel_command(code_cli: str, name: str) -> list[str]:
    if not _NAME.match(name):
        raise ValueError(f"tunnel name {name!r}: 1-20 letters, digits, '-' or '_'")
    return [code_cli, "tunnel", "--accept-server-license-terms", "--name", name]


@dataclass(frozen=True)
class TunnelInfo:
    """What the log has shown so far: the device login (URL and code) and the tunnel link."""

    login_url: str | None = None
    device_code: str | None = None
    link: str | None = None


def read_line(line: str, info: TunnelInfo) -> TunnelInfo:
    """INFO updated with what LINE of `code tunnel` output shows."""
    line = _ANSI.sub("", line)
    if (link := _TUNNEL_LINK.search(line)) is not None:
        return TunnelInfo(info.login_url, info.device_code, link.group(0).rstrip(".,;"))
    if _LOGIN_LINE.search(line) and (code := _DEVICE_CODE.search(line)) is not None:
        url = _URL.search(line)
        login = url.group(0).rstrip(".,;") if url else info.login_url
        return TunnelInfo(login, code.group(1), info.link)
    return info


def follow_tunnel(
    job_id: str,
    log: Path,
    *,
    timeout: float | None,
    poll: float = 2.0,
    out: Callable[[str], None] = print,
) -> tuple[int, str | None]:
    """Follow LOG until the tunnel link appears (EXIT_LINK), the job ends first
    (EXIT_JOB_ENDED, with its state), or TIMEOUT seconds pass (EXIT_TIMEOUT)."""
    start = time.monotonic()
    info = TunnelInfo()
    offset = 0
    pending = ""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    last_check = -poll
    announced_wait = False
    while True:
        if log.exists():
            with open(log, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            offset += len(chunk)
            text = pending + decoder.decode(chunk).replace("\r", "\n")
            *lines, pending = text.split("\n")
            for line in lines:
                before = info
                info = read_line(line, info)
                if info.device_code and info.device_code != before.device_code:
                    out(
                        f"log in: open {info.login_url or 'https://github.com/login/device'}"
                        f" and enter the code {info.device_code}"
                    )
                if info.link:
                    out(f"tunnel: {info.link}")
                    return EXIT_LINK, "RUNNING"
        now = time.monotonic()
        if now - last_check >= poll:
            last_check = now
            state, _ = job_state(job_id)
            if state in FINISHED_STATES:
                return EXIT_JOB_ENDED, state
            if state == "PENDING" and not announced_wait:
                out(f"job {job_id} is waiting in the queue")
                announced_wait = True
        if timeout is not None and now - start >= timeout:
            return EXIT_TIMEOUT, None
        time.sleep(min(poll, 0.5))
