"""`keel data ...`: version files and folders (add, status, checkout, install-hooks) and move
them to and from remotes (push, pull, gc)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from keel.cli.context import JSON_OPTION, project_session

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


app = typer.Typer(no_args_is_help=True)

JOBS = typer.Option(None, "--jobs", "-j", min=1, max=256, help="Parallel workers.")
BAR_MIN_BYTES = 64 << 20  # below this, hashing is over before a bar would be worth drawing


class _HashBar:
    """A progress callback (bytes done, bytes total) that draws a rich bar on stderr, started
    only once there is enough to hash to be worth one."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            if self._progress is None or self._task is None:
                if total < BAR_MIN_BYTES:
                    return
                self._progress, self._task = self._start()
            self._progress.update(self._task, completed=done, total=total)

    def _start(self) -> tuple[Progress, TaskID]:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        from keel.cli.output import err_console

        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        )
        progress.start()
        return progress, progress.add_task(self.label, total=None)

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None


@contextmanager
def _bar(label: str) -> Iterator[_HashBar]:
    bar = _HashBar(label)
    try:
        yield bar
    finally:
        bar.close()


def _cwd_paths(paths: list[Path]) -> list[Path]:
    # Arguments are relative to where the user stands, the library's to the project root.
    return [p if p.is_absolute() else Path.cwd() / p for p in paths]


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


@app.command("add")
def add(
    paths: list[Path] = typer.Argument(..., help="Files or folders inside the project."),
    jobs: int | None = JOBS,
    as_json: bool = JSON_OPTION,
) -> None:
    """Version files or folders: store them in the cache and write PATH.keel pointer files
    (commit those to git; the data itself is git-ignored)."""
    from keel.data.workspace import add as add_data

    with project_session() as project, _bar("hashing") as bar:
        pointers = add_data(project, _cwd_paths(paths), jobs=jobs, progress=bar)
    if as_json:
        from keel.cli.output import print_json

        print_json(pointers)
        return
    for p in pointers:
        what = f"{p.files} files" if p.kind == "dir" else "file"
        print(f"{p.pointer_name}  {p.sha256[:12]}  {_size(p.size)}  {what}")
    names = " ".join(p.pointer_name for p in pointers)
    print(f"Commit the pointer files to version this data: git add {names}")


@app.command("status")
def status(
    remote: str | None = typer.Option(
        None, "--remote", "-r", help="Also check this remote (default: the configured one)."
    ),
    check: bool = typer.Option(
        False, "--check", help="Exit with status 1 when anything is out of date (for CI)."
    ),
    jobs: int | None = JOBS,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show tracked data that is modified or missing in the workspace, missing from the
    cache, or not pushed to the remote."""
    from keel.data.workspace import status as data_status

    with project_session() as project, _bar("hashing") as bar:
        report = data_status(project, remote, jobs=jobs, progress=bar)
    if as_json:
        from keel.cli.output import print_json

        print_json({"remote": report.remote, "clean": report.clean, "paths": report.paths})
    elif not report.paths:
        print("No versioned data here; `keel data add PATH` versions a file or folder.")
    elif report.clean:
        checked = f" and on remote '{report.remote}'" if report.remote else ""
        print(f"{len(report.paths)} tracked path(s) up to date in workspace and cache{checked}.")
    else:
        _print_status(report)
    if check and not report.clean:
        raise typer.Exit(1)


def _print_status(report: Any) -> None:
    from keel.cli.output import print_table

    rows = []
    for p in report.paths:
        problems = [] if p.state == "ok" else [f"{p.state} {p.detail}".strip()]
        if p.not_in_cache:
            problems.append(f"{p.not_in_cache} object(s) not in cache")
        if p.not_pushed:
            problems.append(f"{p.not_pushed} object(s) not pushed")
        if problems:
            rows.append((p.path, p.kind, "; ".join(problems)))
    print_table("Data status", ["path", "kind", "status"], rows)
    hints = []
    if report.modified:
        hints.append("`keel data add PATH` versions changes")
    if report.missing or report.not_in_cache:
        hints.append("`keel data checkout` restores, `keel data pull` fetches")
    if report.not_pushed:
        hints.append("`keel data push` uploads")
    print("; ".join(hints))


@app.command("checkout")
def checkout(
    paths: list[Path] | None = typer.Argument(None, help="Only these tracked paths."),
    rev: str | None = typer.Option(
        None, "--rev", help="Restore data (and pointer files) as committed at this git revision."
    ),
    remote: str | None = typer.Option(
        None, "--remote", "-r", help="Fetch missing objects from this remote."
    ),
    force: bool = typer.Option(
        False, "--force", "-f", help="Overwrite workspace changes not saved with keel data add."
    ),
    jobs: int | None = JOBS,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing when all is well."),
) -> None:
    """Make the workspace data match the pointer files (now, or at --rev), fetching objects
    missing from the cache from the remote."""
    from keel.data.restore import checkout as data_checkout

    with project_session() as project, _bar("writing") as bar:
        report = data_checkout(
            project,
            rev,
            paths=_cwd_paths(paths) if paths else None,
            remote=remote,
            force=force,
            jobs=jobs,
            progress=bar,
        )
    if quiet:
        return
    if not report.restored:
        print(f"{len(report.unchanged)} tracked path(s) already match; nothing to do.")
        return
    fetched = f", {report.fetched} object(s) fetched" if report.fetched else ""
    print(
        f"restored {', '.join(report.restored)}: {report.written} file(s) written, "
        f"{report.deleted} removed{fetched}"
    )


@app.command("install-hooks")
def install_hooks() -> None:
    """Install git hooks so `git checkout`, `git switch` and `git pull` also check out the
    matching data."""
    from keel.data.hooks import install_hooks as install

    with project_session() as project:
        written = install(project)
    if written:
        print("installed " + ", ".join(str(p) for p in written))
    else:
        print("hooks already installed")


def hook_main() -> int:
    """What the git hooks run: `keel data checkout`, errors printed on one line. Independent of
    the root command so a hook keeps working whatever else the CLI registers."""
    from keel.cli.output import err_console
    from keel.errors import KeelError

    try:
        checkout(paths=None, rev=None, remote=None, force=False, jobs=None, quiet=False)
    except KeelError as exc:
        err_console.print(f"[bold red]keel data checkout:[/] {exc}", highlight=False)
        return exc.exit_code
    return 0


# --- remote commands ---
REMOTE = typer.Option(
    None, "--remote", "-r", help="Remote name from keel.yaml (default: data.remote)."
)


class _TransferBar:
    """A TransferProgress drawing one rich bar on stderr: bytes moved (or objects, when the
    sizes are not known up front) and the object count."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._by_bytes = True
        self._objects = 0
        self._total_objects = 0

    def start(self, objects: int, nbytes: int) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.text import Text

        from keel.cli.output import err_console

        class ObjectRate(ProgressColumn):
            def render(self, task: Any) -> Text:
                return Text(f"{task.speed or 0:.0f} objects/s", style="progress.data.speed")

        self.close()
        self._by_bytes = nbytes > 0
        self._objects, self._total_objects = 0, objects
        columns: list[Any] = ["[progress.description]{task.description}", BarColumn()]
        if self._by_bytes:
            columns += [DownloadColumn(), TextColumn("{task.fields[objects]}")]
            columns += [TransferSpeedColumn()]
        else:  # sizes unknown up front: count objects
            columns += [TextColumn("{task.fields[objects]}"), ObjectRate()]
        self._progress = Progress(
            *columns, TimeRemainingColumn(), console=err_console, transient=True
        )
        self._progress.start()
        self._task = self._progress.add_task(
            self.label, total=nbytes if self._by_bytes else objects, objects=self._count()
        )

    def advance(self, nbytes: int, objects: int = 0) -> None:
        if self._progress is None or self._task is None:
            return
        self._objects += objects
        step = nbytes if self._by_bytes else objects
        if objects:
            self._progress.update(self._task, advance=step, objects=self._count())
        elif step:
            self._progress.update(self._task, advance=step)

    def _count(self) -> str:
        return f"{self._objects}/{self._total_objects} objects"

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@contextmanager
def _transfer_bar(label: str) -> Iterator[_TransferBar]:
    bar = _TransferBar(label)
    try:
        yield bar
    finally:
        bar.close()


@app.command("push")
def push(
    paths: list[Path] | None = typer.Argument(None, help="Only these tracked paths."),
    remote: str | None = REMOTE,
    jobs: int | None = JOBS,
    as_json: bool = JSON_OPTION,
) -> None:
    """Upload the objects of the tracked data (all, or PATHS) that the remote lacks; each
    upload is verified, and an interrupted push is finished by running it again."""
    from keel.data.remote import remote_for
    from keel.data.sync import push as push_data

    with project_session() as project, _transfer_bar("push") as bar:
        target = remote_for(project, remote)
        chosen = _cwd_paths(paths) if paths else None
        report = push_data(project, chosen, remote=target.name, jobs=jobs, progress=bar)
    if as_json:
        from keel.cli.output import print_json

        print_json({"remote": target.name, **_report_fields(report)})
        return
    print(
        f"pushed {report.transferred} object(s), {_size(report.bytes)}, to remote "
        f"'{target.name}' in {report.seconds:.1f} s ({report.present} already there)"
    )


@app.command("pull")
def pull(
    paths: list[Path] | None = typer.Argument(None, help="Only these tracked paths."),
    remote: str | None = REMOTE,
    jobs: int | None = JOBS,
    force: bool = typer.Option(
        False, "--force", "-f", help="Overwrite workspace changes not saved with keel data add."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Download the objects of the tracked data (all, or PATHS) that the cache lacks —
    each sha256-verified — and update the workspace to match the pointer files."""
    from keel.data.sync import pull as pull_data

    with project_session() as project, _transfer_bar("pull") as bar, _bar("writing") as writing:
        pulled = pull_data(
            project,
            _cwd_paths(paths) if paths else None,
            remote=remote,
            force=force,
            jobs=jobs,
            progress=writing,
            transfer_progress=bar,
        )
    result, fetched = pulled.checkout, pulled.fetched
    if as_json:
        from keel.cli.output import print_json

        print_json(
            {
                "remote": pulled.remote,
                "fetched": fetched,
                "restored": result.restored,
                "written": result.written,
                "seconds": pulled.seconds,
            }
        )
        return
    print(
        f"pulled {fetched} object(s) from remote '{pulled.remote}' in "
        f"{pulled.seconds:.1f} s; "
        + (
            f"restored {', '.join(result.restored)} ({result.written} file(s) written)"
            if result.restored
            else "workspace already up to date"
        )
    )


def _report_fields(report: Any) -> dict[str, Any]:
    return {
        "transferred": report.transferred,
        "bytes": report.bytes,
        "present": report.present,
        "seconds": round(report.seconds, 3),
    }


GC_SHOWN = 20


@app.command("gc")
def gc(
    remote: str | None = typer.Option(
        None, "--remote", "-r", help="Also collect garbage on this remote."
    ),
    branches: list[str] | None = typer.Option(
        None,
        "--branch",
        "-b",
        help="Keep what pointer files on this git branch need (repeatable; "
        "default: every local branch).",
    ),
    force: bool = typer.Option(
        False, "--force", "-f", help="Delete for real (the default is a dry run)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Delete data objects nothing needs any more: not the workspace's pointer files, not
    those on the branches, not any registered model version's lineage. A dry run unless
    --force."""
    from keel.data.gc import gc as collect

    with project_session() as project:
        report = collect(project, branches=branches or None, remote=remote, dry_run=not force)
    if as_json:
        from keel.cli.output import print_json

        print_json(
            {
                "dry_run": report.dry_run,
                "kept": report.kept,
                "freed_bytes": report.freed_bytes,
                "cache": [{"sha256": s, "size": n} for s, n in report.cache],
                "remote": None
                if report.remote is None
                else [{"sha256": s, "size": n} for s, n in report.remote],
                "unresolved": report.unresolved,
                "remote_packs": report.packs,
                "remote_kept_in_packs": report.kept_packed,
                "remote_unfinished_packs": [{"sha256": s, "size": n} for s, n in report.unfinished],
            }
        )
        return
    _print_gc(report)


def _print_gc(report: Any) -> None:
    from keel.cli.output import print_table

    rows = [("cache", sha, _size(size)) for sha, size in report.cache]
    if report.remote is not None:
        rows += [(f"remote '{report.remote_name}'", sha, _size(n)) for sha, n in report.remote]
    verb = "would delete" if report.dry_run else "deleted"
    if rows:
        title = f"Objects {verb}" + (f" (first {GC_SHOWN})" if len(rows) > GC_SHOWN else "")
        print_table(title, ["where", "sha256", "size"], rows[:GC_SHOWN])
    scope = f"the cache and remote '{report.remote_name}'" if report.remote_name else "the cache"
    print(
        f"{verb} {len(rows)} object(s), {_size(report.freed_bytes)}, from {scope}; "
        f"kept {report.kept} referenced by pointer files (workspace and branches "
        f"{', '.join(report.branches) or 'none'}) or registered model versions"
    )
    if report.packs:
        print(f"the remote objects include {report.packs} pack(s) {verb} whole")
    if report.unfinished:
        print(
            f"{verb} {len(report.unfinished)} unfinished pack(s) left on the remote by "
            "interrupted pushes"
        )
    if report.kept_packed:
        print(
            f"{report.kept_packed} unreferenced remote object(s) stay: their packs also hold "
            "referenced objects"
        )
    if report.unresolved:
        print(
            f"{len(report.unresolved)} dataset(s) in model lineage are in neither the cache "
            f"nor the remote (first: {report.unresolved[0]})"
        )
    if report.dry_run and rows:
        print("This was a dry run; pass --force to delete.")
