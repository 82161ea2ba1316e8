"""DVC's side of the data benchmark; runs inside .bench/dvc-venv (bench/requirements-dvc.txt).

DVC as a user runs it: `dvc init`, its default cache (.dvc/cache) and link types (reflink,
copy), its default 4 × cores parallel transfers, an S3 remote added with `dvc remote add` and
its endpoint and credentials with `dvc remote modify`. Analytics and the update check are off
(this machine has no internet): they change what DVC sends, not what a command does.

    python bench/data/dvc_side.py --dataset DIR --endpoint URL --bucket B --key K --secret S \
        --out result.json
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flow import Remote, Tool, parse_args, remote_of, run, sides_args

from common import emit


def dvc_tool() -> Tool:
    dvc = str(Path(sys.executable).parent / "dvc")
    version = subprocess.run([dvc, "--version"], capture_output=True, text=True, check=True)
    # DVC keeps some state in a per-user site cache; keep it inside the benchmark's folder
    env = {"DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(Path.cwd() / "dvc-site-cache")}
    return Tool(
        name="dvc",
        version=version.stdout.strip(),
        setup=[
            [dvc, "init", "-q"],
            [dvc, "config", "core.analytics", "false"],
            [dvc, "config", "core.check_update", "false"],
        ],
        add=[dvc, "add", "data"],
        status=[dvc, "status"],
        push=[dvc, "push"],
        pull=[dvc, "pull"],
        remote_status=[dvc, "status", "--cloud"],
        configure_remote=lambda repo, remote: _configure(dvc, repo, remote, env),
        pointer="data.dvc",
        cache_dirs=[".dvc/cache"],
        env=env,
    )


def _configure(dvc: str, repo: Path, remote: Remote, env: dict[str, str]) -> None:
    url = f"s3://{remote.bucket}/dvc"
    commands = [
        ["remote", "add", "--force", "-d", "bench", url],  # again for each push's bucket
        ["remote", "modify", "bench", "endpointurl", remote.endpoint_url],
        ["remote", "modify", "bench", "region", "us-east-1"],
        ["remote", "modify", "--local", "bench", "access_key_id", remote.key],
        ["remote", "modify", "--local", "bench", "secret_access_key", remote.secret],
    ]
    for command in commands:
        subprocess.run(
            [dvc, *command], cwd=repo, env={**os.environ, **env}, check=True, capture_output=True
        )


def main() -> None:
    args = parse_args()
    result = run(dvc_tool(), args.dataset, remote_of(args), **sides_args(args))
    emit(args.out, result)


if __name__ == "__main__":
    main()
