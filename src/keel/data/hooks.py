"""Git hooks that keep the data in step with the pointer files: after `git checkout`,
`git switch` and `git pull` (post-checkout, post-merge), `keel data checkout` runs.

A hook already there is kept: it is moved to ``HOOK.pre-keel`` and run first, with the same
arguments, so installing twice or over another tool's hook loses nothing.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from keel.data.gitrev import git, project_prefix

if TYPE_CHECKING:
    from keel.project import Project

HOOKS = ("post-checkout", "post-merge")
MARK = "# keel data hook"

_TEMPLATE = """#!/bin/sh
{mark}: restores versioned data to match the pointer files (installed by
# `keel data install-hooks`). A hook that was here before runs first, from {name}.pre-keel.
if [ -x "$0.pre-keel" ]; then "$0.pre-keel" "$@" || exit $?; fi
# post-checkout gets flag 0 for a file checkout that did not change HEAD: nothing to do then,
# unless pointer files were among the files checked out (cheap to run, so always run).
cd "$(git rev-parse --show-toplevel)"/{prefix} || exit 0
{python} -c 'import sys; from keel.cli.data import hook_main; sys.exit(hook_main())'
"""


def install_hooks(project: Project) -> list[Path]:
    """Install post-checkout and post-merge hooks in the project's git repository; returns
    the hook files written (none when they are already installed).

    >>> keel.data.install_hooks(project)                              # doctest: +SKIP
    [PosixPath('/p/.git/hooks/post-checkout'), PosixPath('/p/.git/hooks/post-merge')]
    """
    prefix = project_prefix(project.root)
    hooks_dir = Path(git(project.root, "rev-parse", "--git-path", "hooks").decode().strip())
    if not hooks_dir.is_absolute():
        hooks_dir = project.root / hooks_dir
    hooks_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in HOOKS:
        hook = hooks_dir / name
        text = _TEMPLATE.format(
            mark=MARK,
            name=name,
            prefix=shlex.quote(prefix),
            python=shlex.quote(sys.executable),
        )
        if hook.exists():
            old = hook.read_text("utf-8", errors="replace")
            if old == text:
                continue
            if MARK not in old:
                os.replace(hook, hook.with_name(name + ".pre-keel"))
        temp = hook.with_name(f".{name}.keel-tmp-{os.getpid()}")
        temp.write_text(text, "utf-8")
        temp.chmod(temp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(temp, hook)
        written.append(hook)
    return written
