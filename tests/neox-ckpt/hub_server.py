"""A local stand-in for the Hugging Face Hub: the endpoints huggingface_hub calls to publish.

The real Hub is not reachable from the test machines. This server, on 127.0.0.1 only, serves
what `HfApi.create_repo`, `create_branch`, `list_repo_refs`, `list_repo_tree`,
`get_paths_info`, `repo_info` and `create_commit` (preupload, LFS batch, LFS PUT and verify,
ndjson commit) send, as read from huggingface_hub's source (`hf_api.py`, `_commit_api.py`,
`lfs.py`), and keeps repositories as commits of `{path: file}` trees so tests can assert what
it holds. Xet storage is not served: tests set `HF_HUB_DISABLE_XET` so uploads use LFS.

Faults are injected per request pattern: an HTTP status (e.g. 429 with or without
`Retry-After`, 500) a given number of times, optionally after the request took effect (a lost
response), and a connection cut halfway through an LFS upload body. Bounded: bodies over
`MAX_BODY` and stores over `MAX_STORE` are refused, sockets time out after 30 s.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MAX_BODY = 64 * 1024 * 1024
MAX_STORE = 512 * 1024 * 1024
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


@dataclass
class Fault:
    method: str
    pattern: str
    status: int = 500  # 0: cut the connection halfway through the request body
    times: int = 1
    retry_after: str | None = None
    after: bool = False  # let the request take effect, then answer with the fault
    hits: int = 0


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> commit


class HubState:
    """Everything the stand-in holds; tests read it directly (same process)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content
        self.lfs_puts: dict[str, int] = {}  # sha256 -> completed uploads
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, int]] = []
        self.auth: set[str] = set()
        self._n = 0

    def new_commit(self, repo: Repo, parent: str | None, tree: dict, message: str) -> str:
        self._n += 1
        cid = hashlib.sha1(f"{self._n}:{parent}:{message}".encode()).hexdigest()
        repo.commits[cid] = {"parent": parent, "tree": tree, "message": message}
        return cid

    def resolve(self, repo: Repo, rev: str) -> str | None:
        return repo.branches.get(rev) or (rev if rev in repo.commits else None)

    def files(self, repo_id: str, rev: str) -> dict[str, bytes]:
        """path -> content of a branch or commit (LFS files resolved)."""
        repo = self.repos[repo_id]
        tree = repo.commits[self.resolve(repo, rev)]["tree"]
        return {p: (self.lfs[e["sha256"]] if e["lfs"] else e["data"]) for p, e in tree.items()}

    def history(self, repo_id: str, rev: str) -> list[str]:
        """Commit messages from the branch head back to the repository's creation."""
        repo = self.repos[repo_id]
        out, cid = [], self.resolve(repo, rev)
        while cid is not None:
            out.append(repo.commits[cid]["message"])
            cid = repo.commits[cid]["parent"]
        return out


class _Cut(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    server: HubServer
    timeout = 30
    swallow = False

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
                if len(out) > MAX_BODY:
                    raise ValueError("body too large")
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n)

    def _send(self, status: int, payload: Any = None, headers: dict | None = None) -> None:
        if self.swallow:  # the request took effect; its answer is replaced by a fault
            self.state.log.append((self.command, self.path, -status))
            self.swallow = False
            return
        data = json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.state.log.append((self.command, self.path, status))

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        self._send(status, {"error": message}, {"X-Error-Code": code} if code else None)

    @property
    def state(self) -> HubState:
        return self.server.state

    def _fault(self, path: str) -> Fault | None:
        with self.state.lock:
            for f in self.state.faults:
                if f.method == self.command and re.search(f.pattern, path) and f.hits < f.times:
                    f.hits += 1
                    return f
        return None

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        if auth := self.headers.get("Authorization"):
            self.state.auth.add(auth)
        fault = self._fault(path)
        if fault is not None and fault.status == 0:
            self._cut()
            return
        if fault is not None and not fault.after:
            self._body()
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            self._send(fault.status, {"error": "injected fault"}, headers)
            return
        self.swallow = fault is not None
        with self.state.lock:
            self._route(path)
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            self._send(fault.status, {"error": "injected fault after success"}, headers)

    def _cut(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(max(1, n // 2))
        self.state.log.append((self.command, self.path, 0))
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_POST = do_PUT = _dispatch

    # ------------------------------------------------------------ routes
    def _route(self, path: str) -> None:
        routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("GET", r"/api/models/([^/]+/[^/]+)/refs", self.refs),
            ("POST", r"/api/models/([^/]+/[^/]+)/branch/([^/]+)", self.create_branch),
            ("POST", r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", self.preupload),
            ("POST", r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/lfs-upload/([0-9a-f]{64})", self.lfs_put),
            ("POST", r"/lfs-verify", self.lfs_verify),
            ("POST", r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", self.commit),
            ("GET", r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", self.tree),
            ("POST", r"/api/models/([^/]+/[^/]+)/paths-info/([^/]+)", self.paths_info),
            ("GET", r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", self.info),
        ]
        for method, pattern, fn in routes:
            m = re.fullmatch(pattern, path)
            if method == self.command and m:
                try:
                    fn(*[unquote(g) if g else g for g in m.groups()])
                except (ValueError, KeyError) as e:
                    self._error(400, f"bad request: {e}")
                return
        self._error(404, f"no route {self.command} {path}")

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None:
            self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _tree(self, repo: Repo, rev: str) -> dict | None:
        cid = self.state.resolve(repo, rev)
        if cid is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return None
        return repo.commits[cid]["tree"]

    def create_repo(self) -> None:
        body = json.loads(self._body() or b"{}")
        repo_id = f"{body['organization']}/{body['name']}"
        url = f"{self.server.url}/{repo_id}"
        if repo_id in self.state.repos:
            self._send(409, {"error": "You already created this model repo", "url": url})
            return
        repo = Repo(private=body.get("visibility") == "private" or bool(body.get("private")))
        entry = {"lfs": False, "data": GITATTRIBUTES, "size": len(GITATTRIBUTES)}
        tree = {".gitattributes": entry}
        repo.branches["main"] = self.state.new_commit(repo, None, tree, "initial commit")
        self.state.repos[repo_id] = repo
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def refs(self, repo_id: str) -> None:
        if (repo := self._repo(repo_id)) is None:
            return
        branches = [
            {"name": b, "ref": f"refs/heads/{b}", "targetCommit": c}
            for b, c in sorted(repo.branches.items())
        ]
        self._send(200, {"branches": branches, "converts": [], "tags": []})

    def create_branch(self, repo_id: str, branch: str) -> None:
        body = json.loads(self._body() or b"{}")
        if (repo := self._repo(repo_id)) is None:
            return
        if branch in repo.branches:
            self._error(409, f"Reference already exists: refs/heads/{branch}")
            return
        start = self.state.resolve(repo, body.get("startingPoint") or "main")
        if start is None:
            self._error(404, "Invalid starting point", "RevisionNotFound")
            return
        repo.branches[branch] = start
        self._send(200, {})

    def preupload(self, repo_id: str, rev: str) -> None:
        body = json.loads(self._body())
        if (repo := self._repo(repo_id)) is None or (tree := self._tree(repo, rev)) is None:
            return
        out = []
        for f in body["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["path"].endswith(LFS_SUFFIXES) or b"\0" in sample or f["size"] > 10_000_000
            have = tree.get(f["path"])
            oid = None
            if have is not None:
                oid = have["sha256"] if have["lfs"] else git_sha1(have["data"])
            out.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        self._send(200, {"files": out})

    def lfs_batch(self, repo_id: str) -> None:
        body = json.loads(self._body())
        if self._repo(repo_id) is None:
            return
        objects = []
        for o in body["objects"]:
            item = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self.state.lfs:
                item["actions"] = {
                    "upload": {"href": f"{self.server.url}/lfs-upload/{o['oid']}"},
                    "verify": {"href": f"{self.server.url}/lfs-verify"},
                }
            objects.append(item)
        self._send(200, {"transfer": "basic", "objects": objects})

    def lfs_put(self, oid: str) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            self._error(400, "content does not match its oid")
            return
        if sum(map(len, self.state.lfs.values())) + len(data) > MAX_STORE:
            self._error(507, "stand-in store full")
            return
        self.state.lfs[oid] = data
        self.state.lfs_puts[oid] = self.state.lfs_puts.get(oid, 0) + 1
        self._send(200, {})

    def lfs_verify(self) -> None:
        body = json.loads(self._body())
        data = self.state.lfs.get(body["oid"])
        if data is None or len(data) != body["size"]:
            self._error(404, "object not uploaded")
            return
        self._send(200, {})

    def commit(self, repo_id: str, rev: str) -> None:
        lines = [json.loads(x) for x in self._body().splitlines() if x.strip()]
        if (repo := self._repo(repo_id)) is None:
            return
        if rev not in repo.branches:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return
        head = repo.branches[rev]
        tree = dict(repo.commits[head]["tree"])
        header = lines[0]["value"]
        if header.get("parentCommit") and header["parentCommit"] != head:
            self._error(412, "parent commit is not the head of the branch")
            return
        for item in lines[1:]:
            v = item["value"]
            if item["key"] == "file":
                data = base64.b64decode(v["content"])
                tree[v["path"]] = {"lfs": False, "data": data, "size": len(data)}
            elif item["key"] == "lfsFile":
                if v["oid"] not in self.state.lfs:
                    self._error(422, f"LFS object {v['oid']} of {v['path']} was never uploaded")
                    return
                size = len(self.state.lfs[v["oid"]])
                tree[v["path"]] = {"lfs": True, "sha256": v["oid"], "size": size}
            elif item["key"] == "deletedFile":
                if tree.pop(v["path"], None) is None:
                    self._error(404, "A file with this name doesn't exist", "EntryNotFound")
                    return
            else:
                self._error(400, f"unsupported operation {item['key']}")
                return
        cid = self.state.new_commit(repo, head, tree, header["summary"])
        repo.branches[rev] = cid
        self._send(
            200,
            {
                "commitUrl": f"{self.server.url}/{repo_id}/commit/{cid}",
                "commitOid": cid,
                "pullRequestUrl": None,
            },
        )

    def _entry(self, path: str, e: dict) -> dict:
        if e["lfs"]:
            pointer = lfs_pointer(e["sha256"], e["size"])
            lfs = {"oid": e["sha256"], "size": e["size"], "pointerSize": len(pointer)}
            return {"type": "file", "oid": git_sha1(pointer), "size": e["size"], "path": path,
                    "lfs": lfs}  # fmt: skip
        return {"type": "file", "oid": git_sha1(e["data"]), "size": e["size"], "path": path}

    def tree(self, repo_id: str, rev: str, sub: str | None) -> None:
        if (repo := self._repo(repo_id)) is None or (tree := self._tree(repo, rev)) is None:
            return
        query = parse_qs(urlsplit(self.path).query)
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        prefix = sub.strip("/") + "/" if sub else ""
        out, dirs = [], set()
        for path, e in sorted(tree.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": d})
            if recursive or len(parts) == 1:
                out.append(self._entry(path, e))
        self._send(200, out)

    def paths_info(self, repo_id: str, rev: str) -> None:
        raw = self._body()
        form = "json" not in self.headers.get("Content-Type", "")
        paths = parse_qs(raw.decode())["paths"] if form else json.loads(raw)["paths"]
        if (repo := self._repo(repo_id)) is None or (tree := self._tree(repo, rev)) is None:
            return
        self._send(200, [self._entry(p, tree[p]) for p in paths if p in tree])

    def info(self, repo_id: str, rev: str | None) -> None:
        if (repo := self._repo(repo_id)) is None:
            return
        cid = self.state.resolve(repo, rev or "main")
        if cid is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return
        tree = repo.commits[cid]["tree"]
        self._send(
            200,
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": cid,
                "private": repo.private,
                "siblings": [{"rfilename": p} for p in sorted(tree)],
            },
        )


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = HubState()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)

    def fail(self, method: str, pattern: str, status: int, times: int = 1, **kw: Any) -> Fault:
        f = Fault(method, pattern, status, times, **kw)
        with self.state.lock:
            self.state.faults.append(f)
        return f
