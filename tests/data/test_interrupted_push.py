"""A push killed with SIGKILL part way never leaves an object that looks complete but is not,
and running it again finishes the job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from keel.data.inventory import contents, list_objects
from keel.data.packs import packed_sizes
from keel.data.remote import Remote
from tests.data.remote_support import fill, make_remote, new_cache

PUSHER = """
import json, sys
from pathlib import Path
from keel.data.cache import DataCache
from keel.data.remote import Remote
import keel.data.packs

keel.data.packs.PACK_BYTES = 1 << 18  # packs of 16 objects: many of them, still in flight

class Report:  # one line per finished object, so the test knows how far the push got
    done = 0
    def start(self, objects, nbytes):
        pass
    def advance(self, nbytes, objects=0):
        if objects:
            self.done += objects
            print(self.done, flush=True)

spec = json.loads(Path(sys.argv[1]).read_text())
remote = Remote("r", spec["url"], spec["options"], jobs=4)
remote.push(DataCache(Path(spec["cache"]), ["copy"]), spec["hashes"], progress=Report())
"""


def _settled(remote: Remote) -> dict[str, int]:
    """The remote's objects once the server has finished the requests the killed client had
    fully sent (a server may complete a PUT after its client is gone)."""
    import time

    before = list_objects(remote)
    while True:
        time.sleep(0.5)
        now = list_objects(remote)
        if now == before:
            return now
        before = now


# Many small objects (one PUT each) and two large streamed ones that are still in flight
# when the kill lands (the largest go first, and take longer than the first small ones).
SIZES = [16_000] * 800 + [64 << 20] * 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["s3", "local"])
def test_killed_push_leaves_no_bad_object_and_a_rerun_finishes(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keel.data.packs

    if kind == "s3":
        request.applymarker(pytest.mark.s3)
    monkeypatch.setattr(keel.data.packs, "PACK_BYTES", 1 << 18)
    remote = make_remote(kind, request, tmp_path)
    cache = new_cache(tmp_path / "cache")
    objects = fill(cache, SIZES)
    sizes = {sha: len(data) for sha, data in objects.items()}

    done_at_kill = _push_and_kill(remote, cache.root, sorted(objects), tmp_path)
    assert done_at_kill < len(objects), "the kill must land part way through the push"

    partial = _settled(remote)
    assert 0 < len(partial) < len(objects)
    _assert_all_intact(remote, partial, sizes, tmp_path / "check1")

    report = remote.push(cache, objects)
    assert report.transferred == len(objects) - len(partial)
    assert report.present == len(partial)
    finished = contents(remote)
    assert finished.objects() == sizes
    # The small objects went packed (and so count only once their pack's index is there).
    assert set(packed_sizes(finished.packs)) == {sha for sha, n in sizes.items() if n < 1 << 20}
    _assert_all_intact(remote, finished.objects(), sizes, tmp_path / "check2")


def _push_and_kill(remote: Remote, cache_root: Path, hashes: list[str], tmp: Path) -> int:
    spec = tmp / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "url": remote.url,
                "options": dict(remote.options),
                "cache": str(cache_root),
                "hashes": hashes,
            }
        )
    )
    child = subprocess.Popen(
        [sys.executable, "-c", PUSHER, str(spec)], env=dict(os.environ), stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        for line in child.stdout:
            done = int(line)
            if done >= 100:  # about an eighth of the objects: well inside the push
                os.kill(child.pid, signal.SIGKILL)
                return done
        pytest.fail(f"the push ended (exit {child.wait()}) before it was killed")
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        child.stdout.close()
    raise AssertionError("unreachable")


def _assert_all_intact(
    remote: Remote, listed: dict[str, int], sizes: dict[str, int], where: Path
) -> None:
    """Every object on the remote has its full size and hashes to its name (pull verifies
    each one before it enters the cache, raising on any mismatch)."""
    assert {sha: sizes.get(sha) for sha in listed} == listed
    check = new_cache(where)
    report = remote.pull(check, listed, sizes=listed)
    assert report.transferred == len(listed)
    assert all(check.has(sha) for sha in listed)
