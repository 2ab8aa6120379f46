"""The NCCL transport line: NCCL's INFO lines (in its own format: host:pid:tid [dev] NCCL INFO
...) summed up as network, NICs, libfabric provider and link kinds; the capture's variables
and scratch files do not outlive it. NCCL itself runs only on GPUs (the gpu tests of neox-train
under NCCL print the line)."""

from __future__ import annotations

import os

import pytest

from neox_core.distributed.nccl_report import (
    capture_nccl_info,
    describe,
    summarize,
    transport_line,
)

IB_NODE = """\
gpu1:811:811 [0] NCCL INFO Bootstrap : Using ib0:10.1.0.11<0>
gpu1:811:811 [0] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/IB ; OOB ib0:10.1.0.11<0>
gpu1:811:811 [0] NCCL INFO Using network IB
gpu1:811:902 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM
gpu1:811:902 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via P2P/CUMEM
gpu1:811:902 [0] NCCL INFO Channel 00/0 : 3[1] -> 0[0] [receive] via NET/IB/0/GDRDMA
gpu1:811:902 [0] NCCL INFO Channel 01/0 : 0[0] -> 2[0] [send] via NET/IB/1/GDRDMA
gpu1:811:902 [0] NCCL INFO Connected all rings
"""
SLINGSHOT_NODE = """\
nid1:77:77 [0] NCCL INFO NET/OFI Selected provider is cxi, fabric is cxi (found 4 nics)
nid1:77:77 [0] NCCL INFO Using network AWS Libfabric
nid1:77:90 [0] NCCL INFO Channel 00/0 : 4[0] -> 0[0] [receive] via NET/AWS Libfabric/0
nid1:77:90 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via SHM/direct/direct
"""
SOCKET_NODE = """\
n3:5:5 [0] NCCL INFO NET/Socket : Using [0]eth0:10.0.0.3<0>
n3:5:5 [0] NCCL INFO Using network Socket
n3:5:9 [0] NCCL INFO Channel 00/0 : 1[0] -> 0[0] [receive] via NET/Socket/0
"""


def test_summary_names_infiniband_and_nvlink() -> None:
    t = summarize(IB_NODE)
    assert t.network == "IB"
    assert t.devices == "[0]mlx5_0:1/IB [1]mlx5_1:1/IB ; OOB ib0:10.1.0.11<0>"
    assert t.provider == ""
    assert t.links == ["NET/IB/GDRDMA", "P2P/CUMEM"]  # device numbers dropped, each kind once


def test_summary_tells_slingshot_from_sockets() -> None:
    ofi, socket = summarize(SLINGSHOT_NODE), summarize(SOCKET_NODE)
    assert (ofi.network, ofi.provider) == ("AWS Libfabric", "cxi")
    assert ofi.links == ["NET/AWS Libfabric", "SHM/direct/direct"]
    assert (socket.network, socket.devices) == ("Socket", "[0]eth0:10.0.0.3<0>")
    assert socket.links == ["NET/Socket"]
    line = describe("2.28.9", ofi, {"FI_CXI_DISABLE_HOST_REGISTER": "1", "PATH": "/bin"})
    assert line == (" > NCCL 2.28.9: network AWS Libfabric (provider cxi); links NET/AWS "
                    "Libfabric, SHM/direct/direct; variables: FI_CXI_DISABLE_HOST_REGISTER=1")  # fmt: skip


def test_describe_without_captured_lines_says_where_they_are() -> None:
    env = {"NCCL_DEBUG": "WARN", "NCCL_SOCKET_IFNAME": "hsn"}
    assert describe("2.28.9", None, env) == (
        " > NCCL 2.28.9: network and links in NCCL's own output (NCCL_DEBUG is set); "
        "variables: NCCL_DEBUG=WARN NCCL_SOCKET_IFNAME=hsn"
    )
    assert describe("2.28.9", None, {}) == (
        " > NCCL 2.28.9: network and links not captured (the process group was set up "
        "elsewhere); variables: none"
    )
    assert "links none reported" in describe("2.28.9", summarize(""), {})


def test_capture_sets_nccl_variables_and_the_line_removes_them(tmp_path, monkeypatch) -> None:
    for name in ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_DEBUG_FILE"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "nccl"
    assert capture_nccl_info(folder)
    assert os.environ["NCCL_DEBUG"] == "INFO" and os.environ["NCCL_DEBUG_SUBSYS"] == "INIT,NET"
    pattern = os.environ["NCCL_DEBUG_FILE"]
    assert pattern == str(folder / "nccl.%h.%p.log")
    # what NCCL writes: the pattern with host and pid filled in; another process's file is
    # not this one's
    (folder / f"nccl.gpu1.{os.getpid()}.log").write_text(IB_NODE)
    (folder / f"nccl.gpu1.{os.getpid() + 1}.log").write_text(SOCKET_NODE)
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "ib0")
    line = transport_line(folder, "2.28.9")
    assert line.startswith(" > NCCL 2.28.9: network IB ([0]mlx5_0:1/IB")
    assert line.endswith("links NET/IB/GDRDMA, P2P/CUMEM; variables: NCCL_SOCKET_IFNAME=ib0")
    assert not folder.exists()
    assert not any(n in os.environ for n in ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_DEBUG_FILE"))


def test_capture_leaves_a_users_nccl_debug_alone(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NCCL_DEBUG", "WARN")
    monkeypatch.delenv("NCCL_DEBUG_FILE", raising=False)
    assert not capture_nccl_info(tmp_path / "nccl")
    assert os.environ["NCCL_DEBUG"] == "WARN" and "NCCL_DEBUG_FILE" not in os.environ


@pytest.mark.parametrize("text", ["", "random text\nNCCL WARN something\n"])
def test_summary_of_lines_without_transports_is_empty(text) -> None:
    t = summarize(text)
    assert (t.network, t.devices, t.provider, t.links) == ("", "", "", [])
