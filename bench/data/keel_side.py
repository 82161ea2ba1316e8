"""Keel's side of the data benchmark; runs inside the project's .venv.

Keel as a user runs it: `keel init`, its default cache (.keel/cache), link types (reflink, copy)
and parallel transfers (data.jobs, 8), an S3 remote written into keel.yaml under data.remotes
with the server's endpoint and credentials as fsspec (s3fs) options, made the default remote.

    python bench/data/keel_side.py --dataset DIR --endpoint URL --bucket B --key K --secret S \
        --out result.json
"""

from __future__ import annotations

import sys
from pathlib import Path

from flow import Remote, Tool, parse_args, remote_of, run, sides_args

from common import emit

REMOTE = "bench"


def keel_tool() -> Tool:
    keel = _keel_data_command()
    return Tool(
        name="keel",
        version=_version(),
        setup=[[str(Path(sys.executable).parent / "keel"), "init", "."]],
        add=[*keel, "add", "data"],
        status=[*keel, "status"],
        push=[*keel, "push"],
        pull=[*keel, "pull"],
        remote_status=[*keel, "status"],
        configure_remote=_configure,
        pointer="data.keel",
        cache_dirs=[".keel/cache"],
    )


def _keel_data_command() -> list[str]:
    """`keel data` as a user runs it: the console script beside this interpreter."""
    return [str(Path(sys.executable).parent / "keel"), "data"]


def _version() -> str:
    from importlib.metadata import version

    return version("keel")


def _configure(repo: Path, remote: Remote) -> None:
    """The remote as a user writes it in keel.yaml (the design's data.remotes mapping)."""
    import yaml

    file = repo / "keel.yaml"
    config = yaml.safe_load(file.read_text("utf-8")) or {}
    data = config.setdefault("data", {})
    data["remote"] = REMOTE
    data["remotes"] = {
        REMOTE: {
            "url": f"s3://{remote.bucket}/keel",
            "options": {
                "key": remote.key,
                "secret": remote.secret,
                "client_kwargs": {
                    "endpoint_url": remote.endpoint_url,
                    "region_name": "us-east-1",
                },
            },
        }
    }
    file.write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")


def main() -> None:
    args = parse_args()
    result = run(keel_tool(), args.dataset, remote_of(args), **sides_args(args))
    emit(args.out, result)


if __name__ == "__main__":
    main()
