"""The steps of the data benchmark, the same for every tool: a fresh git repository with its
own copy of the data set, then ``add``, unchanged re-adds, ``status``, ``push``, and ``pull``
after clearing the local cache and the workspace copy, each timed as a whole CLI command (a
subprocess: interpreter start-up included). A side script describes its tool as a ``Tool``
and calls ``run``.

Runs in both tools' virtual environments, so standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import BenchError, log, summarize

_TAIL = 1500  # characters of a failed command's output kept in the error


@dataclass(frozen=True)
class Remote:
    """The S3-compatible server the orchestrator started, and this tool's bucket on it."""

    endpoint_url: str
    bucket: str
    key: str
    secret: str


@dataclass
class Tool:
    """What differs between tools: the command lines, set-up and where the cache lives."""

    name: str
    version: str
    setup: list[list[str]]  # untimed, in the new repository, before anything is added
    add: list[str]
    status: list[str]
    push: list[str]
    pull: list[str]
    remote_status: list[str]  # status that also asks the remote what it has
    configure_remote: Callable[[Path, Remote], None]
    pointer: str  # the file ``add data`` writes for git
    cache_dirs: list[str]  # relative to the repository; removed before pull
    env: dict[str, str] = field(default_factory=dict)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, required=True, help="folder of data/ + manifest")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--transfer-repeats", type=int, default=1, help="pushes and pulls")
    parser.add_argument("--server-pid", type=int, help="the S3 server's process, for its CPU time")
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


def remote_of(args: argparse.Namespace) -> Remote:
    return Remote(args.endpoint, args.bucket, args.key, args.secret)


def bucket_for(base: str, push: int) -> str:
    """The bucket of the ``push``-th push (from 0): each push goes to an empty bucket."""
    return base if push == 0 else f"{base}-{push + 1}"


def sides_args(args: argparse.Namespace) -> dict[str, Any]:
    """What a side script passes on to ``run`` from its command line."""
    return {
        "repeats": args.repeats,
        "transfer_repeats": args.transfer_repeats,
        "server_pid": args.server_pid,
    }


def run(
    tool: Tool,
    dataset: Path,
    remote: Remote,
    *,
    repeats: int,
    transfer_repeats: int = 1,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """All the steps in a repository under the working folder; returns the timings. A step
    that fails ends the run: the result then has the steps done so far and ``error``."""
    import json

    manifest = json.loads((dataset / "manifest.json").read_text())
    result: dict[str, Any] = {
        "tool": tool.name,
        "version": tool.version,
        "repeats": repeats,
        "transfer_repeats": transfer_repeats,
    }
    steps = ("add", "status", "push", "pull", "remote_status")
    result["commands"] = {step: " ".join(getattr(tool, step)) for step in steps}
    try:
        _steps(tool, dataset, manifest, remote, result, server_pid)
    except BenchError as exc:
        log(f"{tool.name}: {str(exc).splitlines()[0]}")
        result["error"] = str(exc)
    return result


def _steps(
    tool: Tool,
    dataset: Path,
    manifest: dict[str, Any],
    remote: Remote,
    result: dict[str, Any],
    server_pid: int | None,
) -> None:
    """Runs the steps, filling ``result`` (which already says how often to repeat them)."""
    repeats, transfers = result["repeats"], result["transfer_repeats"]
    repo = _fresh_repo(tool, dataset)
    server = _ServerCpu(server_pid)
    env = {**os.environ, **tool.env}
    log(f"{tool.name}: first add of {len(manifest['files']):,} files")
    result["add"] = _timed(tool.add, repo, env)
    pointer = (repo / tool.pointer).read_bytes()
    result["readd"] = _repeat(tool.add, repo, env, repeats)
    if (repo / tool.pointer).read_bytes() != pointer:
        raise BenchError(f"{tool.name}: re-adding unchanged data changed {tool.pointer}")
    result["status"] = _repeat(tool.status, repo, env, repeats)
    pushes = []
    for push in range(transfers):  # each into an empty bucket of its own
        bucket = bucket_for(remote.bucket, push)
        tool.configure_remote(repo, dataclasses.replace(remote, bucket=bucket))
        log(f"{tool.name}: push to {remote.endpoint_url}/{bucket}")
        pushes.append(server.during("push", lambda: _timed(tool.push, repo, env)))
    result["push"] = _summary(pushes)
    result["remote_status"] = _repeat(tool.remote_status, repo, env, max(1, repeats // 2))
    pulls = []
    for pull in range(transfers):
        _clear(repo, ["data", *tool.cache_dirs], f"pull-{pull}")
        os.sync()
        log(f"{tool.name}: pull into an empty cache and workspace")
        pulls.append(server.during("pull", lambda: _timed(tool.pull, repo, env)))
        result["pull_check"] = check = verify(repo / "data", manifest)
        if not check["ok"]:
            break
    result["pull"] = _summary(pulls)
    result["server_cpu"] = server.seconds
    result["stolen_cpu"] = server.stolen


class _ServerCpu:
    """The S3 server's CPU seconds (user + system, from /proc) spent during named steps:
    the server shares the machine's cores with the client, so its cost bounds the step.
    Also the CPU time the virtual machine's host took from all cores meanwhile (steal), which
    neither tool controls."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.seconds: dict[str, list[float]] = {}  # each time the step ran, in order
        self.stolen: dict[str, list[float]] = {}

    def during(self, step: str, work: Callable[[], float]) -> float:
        before, stolen_before = self._now(), _stolen()
        elapsed = work()
        after, stolen_after = self._now(), _stolen()
        if before is not None and after is not None:
            self.seconds.setdefault(step, []).append(after - before)
        if stolen_before is not None and stolen_after is not None:
            self.stolen.setdefault(step, []).append(stolen_after - stolen_before)
        return elapsed

    def _now(self) -> float | None:
        if self.pid is None:
            return None
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:  # not Linux, or the server is gone
            return None
        # utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the command name
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stolen() -> float | None:
    """Seconds of CPU time the host has taken from this machine's cores since boot."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:  # not Linux
        return None
    # the "cpu" line: user nice system idle iowait irq softirq steal ... (proc(5))
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else None


def _fresh_repo(tool: Tool, dataset: Path) -> Path:
    repo = Path.cwd() / "repo"
    repo.mkdir()
    git = ["git", "-c", "init.defaultBranch=main"]
    _quiet([*git, "init", "-q"], repo)
    _quiet(["git", "config", "user.email", "bench@example.com"], repo)
    _quiet(["git", "config", "user.name", "bench"], repo)
    log(f"{tool.name}: copying the data set into {repo}")
    shutil.copytree(dataset / "data", repo / "data")
    for command in tool.setup:
        _quiet(command, repo, {**os.environ, **tool.env})
    _quiet(["git", "add", "-A", ":!data"], repo)
    _quiet(["git", "commit", "-q", "-m", "set-up", "--allow-empty"], repo)
    os.sync()  # the copy's dirty pages are written now, not during the first timed add
    return repo


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")[-_TAIL:]
        raise BenchError(f"{' '.join(command)} exited {done.returncode}:\n{output}")
    return elapsed


def _repeat(command: list[str], cwd: Path, env: dict[str, str], n: int) -> dict[str, Any]:
    return _summary([_timed(command, cwd, env) for _ in range(n)])


def _summary(samples: list[float]) -> dict[str, Any]:
    return {**summarize(samples), "samples": samples}


def _quiet(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")[-_TAIL:]
        raise BenchError(f"{' '.join(command)} exited {done.returncode}:\n{output}")


def _clear(repo: Path, relative: list[str], into: str) -> None:
    """Empty the workspace and cache as a fresh clone has them: each path is moved out of the
    repository into ``cleared/<into>`` beside it, deleted with the side's folder after all sides
    ran. Deleting them here would slow the pull that follows: on ext4 without a journal the
    inode allocator skips inodes freed in the last minutes, reading each one's table block,
    and the pull creates 20,000 files."""
    cleared = repo.parent / "cleared" / into
    cleared.mkdir(parents=True, exist_ok=True)
    for name in relative:
        path = repo / name
        if path.exists() or path.is_symlink():
            target = cleared / name
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)


def verify(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Every file of the manifest in ``folder`` with the same bytes (sha256), nothing else."""
    expected: dict[str, dict[str, Any]] = manifest["files"]
    found = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    missing = sorted(set(expected) - found)
    extra = sorted(found - set(expected))
    wrong = [
        name for name in sorted(found & set(expected)) if not _same(folder / name, expected[name])
    ]
    return {
        "ok": not (missing or extra or wrong),
        "files": len(found),
        "missing": missing[:10],
        "extra": extra[:10],
        "wrong": wrong[:10],
    }


def _same(path: Path, entry: dict[str, Any]) -> bool:
    if path.stat().st_size != entry["size"]:
        return False
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest() == entry["sha256"]
