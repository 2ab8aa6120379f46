"""Which way NCCL moves data, in one log line.

A run should show at a glance whether its nodes talk over InfiniBand, over Slingshot or EFA
(libfabric through the OFI net plugin) or over plain sockets, and whether GPUs of one node use
NVLink (P2P) or shared memory: a job that silently fell back to sockets trains several times
slower. NCCL says which only at INFO level. Unless the user set NCCL_DEBUG,
`capture_nccl_info` sends NCCL's INFO lines about initialisation and the network
(NCCL_DEBUG_SUBSYS=INIT,NET) to one file per process (NCCL_DEBUG_FILE, `%h.%p` expanded by
NCCL) in a scratch folder, before the first NCCL call; `transport_line` reads this process's
file once the first communicator exists and removes the folder.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

OWN_VARIABLES = ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_DEBUG_FILE")
_NETWORK = re.compile(r"NCCL INFO Using network (.+?)\s*$")
_DEVICES = re.compile(r"NCCL INFO NET/(IB|Socket) ?: Using (.+?)\s*$")
_PROVIDER = re.compile(r"NCCL INFO NET/OFI Selected [Pp]rovider is ([\w-]+)")
_LINK = re.compile(r"NCCL INFO (?:Channel|Ring) \d+(?:/\d+)? : .* via (.+?)\s*$")


@dataclass
class NcclTransports:
    """What NCCL's INFO lines say it chose (empty where they do not say)."""

    network: str = ""  # "IB", "Socket", a net plugin's name ("AWS Libfabric", "OFI", ...)
    devices: str = ""  # the NICs of NET/IB or NET/Socket, as NCCL lists them
    provider: str = ""  # the libfabric provider of the OFI plugin ("cxi" is Slingshot)
    links: list[str] = field(default_factory=list)  # "P2P/CUMEM", "SHM/direct/direct", ...


def capture_nccl_info(folder: Path | None = None) -> Path | None:
    """Point NCCL's INIT and NET info lines at per-process files in `folder` (created; a new
    temporary folder if None) and return it; does nothing and returns None when NCCL_DEBUG is
    already set (the user's own logging)."""
    if "NCCL_DEBUG" in os.environ:
        return None
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="neox-nccl-"))
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["NCCL_DEBUG"] = "INFO"
    os.environ["NCCL_DEBUG_SUBSYS"] = "INIT,NET"
    os.environ["NCCL_DEBUG_FILE"] = str(folder / "nccl.%h.%p.log")
    return folder


def summarize(text: str) -> NcclTransports:
    """The network, NICs, libfabric provider and link kinds named in NCCL INFO lines. Link
    kinds drop NCCL's device and channel numbers ("NET/IB/2/GDRDMA" -> "NET/IB/GDRDMA")."""
    out = NcclTransports()
    links: set[str] = set()
    for line in text.splitlines():
        if m := _NETWORK.search(line):
            out.network = m.group(1)
        elif m := _DEVICES.search(line):
            out.devices = m.group(2)
        elif m := _PROVIDER.search(line):
            out.provider = m.group(1)
        elif m := _LINK.search(line):
            links.add("/".join(p for p in m.group(1).split("/") if not p.isdigit()))
    out.links = sorted(links)
    return out


def describe(version: str, t: NcclTransports | None, env: dict[str, str]) -> str:
    """One log line: version, network (NICs, provider), links, and the NCCL_* / FI_*
    variables in `env`. `t` None: NCCL's lines were not captured (with NCCL_DEBUG set they
    are in NCCL's own output)."""
    names = sorted(k for k in env if k.startswith(("NCCL_", "FI_")))
    variables = " ".join(f"{k}={env[k]}" for k in names) or "none"
    if t is None:
        where = ("in NCCL's own output (NCCL_DEBUG is set)" if "NCCL_DEBUG" in env
                 else "not captured (the process group was set up elsewhere)")  # fmt: skip
        return f" > NCCL {version}: network and links {where}; variables: {variables}"
    net = t.network or "not reported"
    details = [x for x in (t.devices, f"provider {t.provider}" if t.provider else "") if x]
    if details:
        net += f" ({'; '.join(details)})"
    links = ", ".join(t.links) if t.links else "none reported (one process, or no channel yet)"
    return f" > NCCL {version}: network {net}; links {links}; variables: {variables}"


def read_own_info(folder: Path) -> str:
    """The text NCCL wrote for this process (its file name ends in `.<pid>.log`)."""
    files = sorted(folder.glob(f"nccl.*.{os.getpid()}.log"))
    return "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)


def transport_line(folder: Path, version: str) -> str:
    """`describe` of this process's captured NCCL lines, once its first communicator exists.
    Removes `folder` and the capture's variables: NCCL read them at its first call and keeps
    its open file (later communicators of this process still log there, unlinked), and
    processes started later should not inherit them."""
    try:
        text = read_own_info(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        for name in OWN_VARIABLES:
            os.environ.pop(name, None)
    return describe(version, summarize(text), dict(os.environ))
