"""`neox-ckpt upload`: publish an experiment's checkpoints to the Hugging Face Hub.

For each selected `global_step<N>`: convert to HF (bf16 by default) into a temporary folder and
commit it as branch `global_step<N>` of `<org>/sfm-<experiment>` (the experiment's last step
also to `main`), and commit the raw neox step, as a loadable save directory
(`global_step<N>/...` plus `latest`), to branch `global_step<N>` of `<org>/neox-ckpt-<model>`.

Everything goes through huggingface_hub's API (create_repo, create_branch, list_repo_tree,
create_commit with its LFS/Xet uploads). Each `repo@revision` target is one commit: the remote
tree is listed and compared with the local files (sha256 for LFS files, git blob sha1 for
the rest), identical targets are skipped, changed or missing files are added and stale ones
deleted in one commit, and the tree is compared again afterwards. A whole target is retried
(`retry.py`), so a half-finished target is completed and none is committed twice. Progress
goes to a state file after every target; a rerun skips targets whose branch still points to the
recorded commit without converting again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neox_ckpt.errors import ConversionError
from neox_ckpt.hub_naming import HF_PREFIX, NEOX_PREFIX, ShortName, check_and_record, repo_name
from neox_ckpt.hub_state import UploadState
from neox_ckpt.retry import RetryPolicy, with_retries

log = logging.getLogger("neox_ckpt.upload")
STEP_DIR = re.compile(r"global_step(\d+)")
STATE_FILE = "hub_upload_state.json"
RANDOM_DELAY_MAX = 12 * 3600
KEEP_REMOTE = frozenset({".gitattributes"})


class HubUploadError(ConversionError):
    """An upload that failed for good; names the step, repository and revision."""


# ---------------------------------------------------------------- experiment and step selection


def find_steps(experiment_dir: Path) -> tuple[Path, dict[int, Path]]:
    """(save directory, step -> complete `global_step<N>` directory) of an experiment."""
    if not experiment_dir.is_dir():
        raise ConversionError(f"{experiment_dir}: not a directory")
    for save in (experiment_dir, experiment_dir / "checkpoints"):
        steps = {
            int(m.group(1)): p
            for p in sorted(save.iterdir())
            if p.is_dir() and (m := STEP_DIR.fullmatch(p.name)) and (p / "manifest.json").is_file()
        }
        if steps:
            return save, steps
    raise ConversionError(
        f"{experiment_dir}: no complete global_step<N> directories (with manifest.json) in it "
        "or in its checkpoints/ folder"
    )


def select_steps(spec: str, available: list[int]) -> list[int]:
    """`all`, `1000,2000`, `1000-5000` (inclusive, of the steps present) or a mix of those."""
    if spec.strip() == "all":
        return sorted(available)
    chosen: set[int] = set()
    for item in spec.split(","):
        item = item.strip()
        if m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", item):
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise ConversionError(f"--steps {spec!r}: range {item} runs backwards")
            found = [s for s in available if lo <= s <= hi]
            if not found:
                raise ConversionError(f"--steps {spec!r}: no checkpoint in {item}")
            chosen.update(found)
        elif item.isdigit():
            if int(item) not in available:
                raise ConversionError(
                    f"--steps {spec!r}: no global_step{int(item)} (present: "
                    f"{', '.join(map(str, sorted(available)))})"
                )
            chosen.add(int(item))
        else:
            raise ConversionError(f"--steps {spec!r}: expected all, N, N,M,... or A-B")
    return sorted(chosen)


def parse_delay(text: str, rng: random.Random | None = None) -> float:
    """`--upload-delay`: seconds, or `random` (uniform 0-12 h, spreads many jobs' uploads)."""
    if text == "random":
        return (rng or random.Random()).uniform(0, RANDOM_DELAY_MAX)
    try:
        value = float(text)
    except ValueError:
        raise ConversionError(f"--upload-delay {text!r}: expected seconds or 'random'") from None
    if value < 0:
        raise ConversionError(f"--upload-delay {text!r}: must not be negative")
    return value


# ---------------------------------------------------------------- targets


@dataclass
class Target:
    """One commit: the files of `step` in `kind` form on branch `revision` of `repo_id`."""

    kind: str  # "hf" or "neox"
    step: int
    repo_id: str
    revision: str

    @property
    def label(self) -> str:
        return f"step {self.step}, {self.kind} repo {self.repo_id} revision {self.revision}"


@dataclass
class UploadOptions:
    org: str
    steps: str = "all"
    experiment: str | None = None
    model: str | None = None
    upload_neox_only: bool = False
    skip_neox_upload: bool = False
    precision: str = "bf16"
    tokenizer: str | None = None
    private: bool = False
    dry_run: bool = False
    upload_delay: str = "0"
    state_file: str | None = None
    name_map: str | None = None
    endpoint: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep


def _names(experiment_dir: Path, opts: UploadOptions) -> tuple[ShortName, ...]:
    here = experiment_dir.resolve()
    base = here.parent.name if here.name == "checkpoints" else here.name
    experiment = opts.experiment or base
    model = opts.model or experiment
    return repo_name(HF_PREFIX, experiment), repo_name(NEOX_PREFIX, model)


def plan_targets(steps: list[int], last: int, hf_repo: str, neox_repo: str, opts: UploadOptions):
    """Targets per step, in upload order (HF branch, HF main for the last step, raw neox)."""
    out: dict[int, list[Target]] = {}
    for s in steps:
        rev = f"global_step{s}"
        ts = []
        if not opts.upload_neox_only:
            ts.append(Target("hf", s, hf_repo, rev))
            if s == last:
                ts.append(Target("hf", s, hf_repo, "main"))
        if not opts.skip_neox_upload:
            ts.append(Target("neox", s, neox_repo, rev))
        out[s] = ts
    return out


# ---------------------------------------------------------------- local files and sizes


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _git_sha1(path: Path) -> str:
    from huggingface_hub.utils.sha import git_hash

    return git_hash(path.read_bytes())


def neox_files(step_dir: Path, scratch: Path) -> dict[str, Path]:
    """path in repo -> local file: the step directory under its own name plus `latest`."""
    files = {
        f"{step_dir.name}/{p.relative_to(step_dir).as_posix()}": p
        for p in sorted(step_dir.rglob("*"))
        if p.is_file()
    }
    latest = scratch / "latest"
    latest.write_text(f"{step_dir.name}\n", encoding="utf-8")
    files["latest"] = latest
    return files


def folder_files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def hf_size_estimate(step_dir: Path, precision: str) -> int:
    """Bytes of the HF weights at `precision`, from the checkpoint's tensor shapes (no reading)."""
    from math import prod

    from neox_ckpt.neox_reader import NeoxCheckpoint

    width = {"fp32": 4, "bf16": 2, "fp16": 2}.get(precision)
    ck = NeoxCheckpoint(step_dir)
    if width is None:  # auto: as stored
        return sum(prod(t.full_shape) * t.dtype.itemsize for t in ck.tensors.values())
    return sum(prod(t.full_shape) * width for t in ck.tensors.values())


def _tokenizer_of(step_dir: Path, opts: UploadOptions) -> str | None:
    if opts.tokenizer is not None:
        return opts.tokenizer
    try:
        saved = json.loads((step_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    data = saved.get("data", {}) if isinstance(saved, dict) else {}
    vocab = data.get("vocab_file")
    if data.get("tokenizer_type") == "HFTokenizer" and vocab and Path(vocab).is_file():
        return str(vocab)
    return None


# ---------------------------------------------------------------- one target against the Hub


def _remote_files(api: Any, target: Target) -> dict[str, Any]:
    from huggingface_hub.hf_api import RepoFile

    entries = api.list_repo_tree(target.repo_id, revision=target.revision, recursive=True)
    return {e.path: e for e in entries if isinstance(e, RepoFile)}


def _same(local: Path, sha256: str, remote: Any) -> bool:
    if remote.size != local.stat().st_size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == sha256
    return remote.blob_id == _git_sha1(local)


def _diff(
    files: dict[str, Path], sums: dict[str, str], remote: dict[str, Any]
) -> tuple[list[str], list[str]]:
    changed = [p for p in files if p not in remote or not _same(files[p], sums[p], remote[p])]
    stale = [p for p in remote if p not in files and p not in KEEP_REMOTE]
    return changed, stale


def _branch_head(api: Any, repo_id: str, revision: str) -> str | None:
    refs = api.list_repo_refs(repo_id)
    for b in refs.branches:
        if b.name == revision:
            return b.target_commit
    return None


def sync_target(
    api: Any, target: Target, files: dict[str, Path], sums: dict[str, str], private: bool
) -> tuple[str, str]:
    """Make branch `target.revision` hold exactly `files`; ('skipped'|'committed', commit id)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api.create_repo(target.repo_id, private=private, exist_ok=True)
    if _branch_head(api, target.repo_id, target.revision) is None:
        api.create_branch(target.repo_id, branch=target.revision, exist_ok=True)
    changed, stale = _diff(files, sums, _remote_files(api, target))
    if not changed and not stale:
        head = _branch_head(api, target.repo_id, target.revision)
        return "skipped", head or ""
    ops: list[Any] = [CommitOperationAdd(p, str(files[p])) for p in changed]
    ops += [CommitOperationDelete(p) for p in stale]
    info = api.create_commit(
        target.repo_id,
        ops,
        commit_message=f"{target.kind} checkpoint global_step{target.step}",
        commit_description=f"{len(changed)} file(s) added or updated, {len(stale)} removed "
        "(neox-ckpt upload)",
        revision=target.revision,
    )
    changed, stale = _diff(files, sums, _remote_files(api, target))
    if changed or stale:
        raise HubUploadError(
            f"{target.label}: after the commit the Hub holds different files "
            f"({', '.join((changed + stale)[:5])})"
        )
    return "committed", info.oid


# ---------------------------------------------------------------- the command


def _fmt_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def upload(experiment_dir: str | Path, opts: UploadOptions, out: Callable[[str], None] = print):
    """Run (or with `dry_run` only print) the upload plan; returns the state as a dict."""
    exp = Path(experiment_dir)
    save_dir, steps_found = find_steps(exp)
    if opts.upload_neox_only and opts.skip_neox_upload:
        raise ConversionError("--upload-neox-only and --skip-neox-upload exclude each other")
    steps = select_steps(opts.steps, list(steps_found))
    last = max(steps_found)
    hf_name, neox_name = _names(exp, opts)
    hf_repo, neox_repo = f"{opts.org}/{hf_name.name}", f"{opts.org}/{neox_name.name}"
    targets = plan_targets(steps, last, hf_repo, neox_repo, opts)
    state_path = Path(opts.state_file) if opts.state_file else exp / STATE_FILE

    out("repository names:")
    for kind, n in (("experiment", hf_name), ("model", neox_name)):
        how = "; ".join(n.rules) if n.rules else "unchanged"
        out(f"  {kind} {n.original!r} -> {opts.org}/{n.name} ({how})")
    names_record = {
        "org": opts.org,
        "hf": {"original": hf_name.original, "repo": hf_repo, "rules": hf_name.rules},
        "neox": {"original": neox_name.original, "repo": neox_repo, "rules": neox_name.rules},
    }

    if opts.dry_run:
        state = UploadState(state_path) if state_path.is_file() else None
        out(f"plan ({len(steps)} step(s) of {len(steps_found)} in {save_dir}; last step {last}):")
        for s in steps:
            raw = sum(p.stat().st_size for p in steps_found[s].rglob("*") if p.is_file())
            for t in targets[s]:
                if t.kind == "hf":
                    size = f"~{_fmt_size(hf_size_estimate(steps_found[s], opts.precision))} "
                    size += f"safetensors ({opts.precision})"
                else:
                    n_files = sum(1 for p in steps_found[s].rglob("*") if p.is_file()) + 1
                    size = f"{_fmt_size(raw)} in {n_files} files"
                done = state.target(t.repo_id, t.revision).get("status") if state else None
                mark = f" [state: {done}]" if done else ""
                out(f"  global_step{s}: {t.repo_id}@{t.revision}  {size}{mark}")
        out(f"state file: {state_path}  private: {opts.private}  (dry run: nothing uploaded)")
        return {"targets": {}, "names": names_record}

    if opts.name_map:
        check_and_record(Path(opts.name_map), [hf_name, neox_name])
    state = UploadState(state_path)
    state.set_names(names_record)
    delay = parse_delay(opts.upload_delay)
    if delay > 0:
        out(f"waiting {delay:.0f} s before uploading (--upload-delay {opts.upload_delay})")
        opts.sleep(delay)

    from huggingface_hub import HfApi

    api = HfApi(endpoint=opts.endpoint) if opts.endpoint else HfApi()
    for s in steps:
        _upload_step(api, s, steps_found[s], targets[s], state, opts, out)
    out(f"done; state in {state_path}")
    return state.data


def _recorded_done(api: Any, state: UploadState, t: Target, policy: RetryPolicy) -> bool:
    rec = state.target(t.repo_id, t.revision)
    if rec.get("status") != "done" or not rec.get("commit"):
        return False
    head = with_retries(
        f"{t.label}: read refs", lambda: _branch_head(api, t.repo_id, t.revision), policy
    )
    return head == rec["commit"]


def _upload_step(
    api: Any,
    step: int,
    step_dir: Path,
    targets: list[Target],
    state: UploadState,
    opts: UploadOptions,
    out: Callable[[str], None],
) -> None:
    pending = []
    for t in targets:
        try:
            if _recorded_done(api, state, t, opts.retry):
                out(f"global_step{step}: {t.repo_id}@{t.revision} already uploaded (state file)")
                continue
        except Exception as e:
            _fail(state, t, e)
        pending.append(t)
    if not pending:
        return
    with tempfile.TemporaryDirectory(prefix=f"neox-upload-{step}-") as tmp:
        scratch = Path(tmp)
        local: dict[str, dict[str, Path]] = {}
        if any(t.kind == "hf" for t in pending):
            from neox_ckpt.neox_to_hf import neox_to_hf

            out(f"global_step{step}: converting to HF ({opts.precision})")
            neox_to_hf(
                step_dir,
                scratch / "hf",
                precision=opts.precision,
                tokenizer=_tokenizer_of(step_dir, opts),
            )
            local["hf"] = folder_files(scratch / "hf")
        if any(t.kind == "neox" for t in pending):
            local["neox"] = neox_files(step_dir, scratch)
        sums = {kind: {p: _sha256(f) for p, f in files.items()} for kind, files in local.items()}
        for t in pending:
            files = local[t.kind]
            state.update(
                t.repo_id, t.revision, step=step, kind=t.kind, status="pending", error=None
            )
            try:
                result, commit = with_retries(
                    t.label,
                    lambda t=t, files=files: sync_target(api, t, files, sums[t.kind], opts.private),
                    opts.retry,
                )
            except Exception as e:
                _fail(state, t, e)
            state.update(t.repo_id, t.revision, status="done", commit=commit, files=sums[t.kind])
            total = sum(f.stat().st_size for f in files.values())
            verb = "already on the Hub" if result == "skipped" else "uploaded"
            out(
                f"global_step{step}: {t.repo_id}@{t.revision} {verb} "
                f"({len(files)} files, {_fmt_size(total)}, commit {commit[:12]})"
            )


def _fail(state: UploadState, t: Target, e: Exception) -> None:
    from neox_ckpt.retry import classify

    _, _, reason = classify(e)
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    state.update(t.repo_id, t.revision, step=t.step, kind=t.kind, status="failed", error=msg)
    raise HubUploadError(
        f"{t.label} failed ({reason}): {msg}; progress saved in {state.path}, "
        "rerun the same command to continue"
    ) from e


__all__ = [
    "HubUploadError",
    "Target",
    "UploadOptions",
    "find_steps",
    "parse_delay",
    "plan_targets",
    "select_steps",
    "sync_target",
    "upload",
]
