"""A worker killed in any phase ends ``ordered_map`` and ``satclip shards --workers 2`` within
seconds with the message (it used to hang 3 in 10) and leaves no process; the hidden ``.OUT.partial``
folder is kept, and the same command resumes it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from satclip.data import resume
from satclip.data.ordered_pool import RemoteTraceback, WorkerDied, ordered_map

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


_OTHERS: set[int] = set()
"""Children this process had before the test (left by earlier tests of the session, e.g. joblib's workers)."""


@pytest.fixture(autouse=True)
def _children_before() -> None:
    _OTHERS.clear()
    _OTHERS.update(_workers(os.getpid()))


def _workers(pid: int) -> list[int]:
    """The pool workers among the children of ``pid`` (not multiprocessing's resource tracker, nor the
    children this process had before the test)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except FileNotFoundError:  # a thread that ended since the listing
            continue
    alive = []
    for kid in kids:
        try:
            if kid not in _OTHERS and b"resource_tracker" not in Path(f"/proc/{kid}/cmdline").read_bytes():
                alive.append(kid)
        except FileNotFoundError:
            pass
    return alive


def _map_abs(results: list) -> None:
    for _ in range(10):
        results.append(list(ordered_map(abs, range(-300, 0), workers=2, ahead=1)))


def test_results_in_order_and_errors_with_the_worker_traceback():
    """In order, and never waiting with nothing outstanding: with a window of 2, both results can
    be yielded in one round (an early version then waited forever, in 1 of 2 runs)."""
    results: list = []
    mapper = threading.Thread(target=_map_abs, args=(results,), daemon=True)
    mapper.start()
    mapper.join(120)
    assert not mapper.is_alive() and results == [list(range(300, 0, -1))] * 10
    with pytest.raises(ValueError, match="invalid literal") as caught:
        list(ordered_map(int, ["1", "2", "x", "4"], workers=2))
    assert isinstance(caught.value.__cause__, RemoteTraceback) and "int" in str(caught.value.__cause__)
    with pytest.raises(WorkerDied, match=r"died \(exit status 3\) after 0 results"):
        list(ordered_map(os._exit, [3, 3, 3], workers=2))
    assert _workers(os.getpid()) == []


def _consume(outcome: dict) -> None:
    """Run a pool of 16 MB results to the end; record the :class:`WorkerDied` and when it came."""
    try:
        for _ in ordered_map(bytes, [16_000_000] * 400, workers=2, ahead=2):
            pass
    except WorkerDied as err:
        outcome["error"], outcome["at"] = err, time.monotonic()


def test_a_worker_killed_at_any_moment_never_hangs():
    """25 runs, each killing one worker at a random moment: starting, receiving a job, working or in
    the middle of sending a 16 MB result (the moment that hung ProcessPoolExecutor)."""
    rng = random.Random(0)
    for run in range(25):
        outcome: dict = {}
        consumer = threading.Thread(target=_consume, args=(outcome,), daemon=True)
        consumer.start()
        time.sleep(rng.uniform(0.0, 0.8))
        started = time.monotonic()
        while not (workers := _workers(os.getpid())) and time.monotonic() - started < 30:
            time.sleep(0.01)  # a loaded machine may take longer than the random wait to spawn them
        assert workers, f"run {run}: no worker to kill"
        os.kill(rng.choice(workers), signal.SIGKILL)
        killed = time.monotonic()
        consumer.join(10)
        assert not consumer.is_alive(), f"run {run}: still waiting 10 s after a worker was killed"
        assert "killed by SIGKILL" in str(outcome["error"]) and outcome["at"] - killed < 5
        assert _workers(os.getpid()) == [], f"run {run}: a worker outlived the pool"


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's corpus: 12 Major TOM cells of 1,068 px (16 patches each) in two Parquet parts."""
    from corpora import majortom_row, sample_patches, write_majortom

    patches = sample_patches()
    rows = [majortom_row(patches[i % len(patches)], f"{100 + i}U_{200 + i}R", size=1068) for i in range(12)]
    return write_majortom(tmp_path_factory.mktemp("majortom"), [rows[:6], rows[6:]])


def _shards_command(cells: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "satclip.cli", "shards", str(cells), "--out", str(out), "--samples-per-shard", "16", "--workers", "2"]


def _start_shards(cells: Path, out: Path, **popen) -> subprocess.Popen:
    """``satclip shards CELLS --workers 2``, returned once its first shard is in the hidden folder."""
    proc = subprocess.Popen(_shards_command(cells, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    started = time.monotonic()
    while not (resume.partial_folder(out) / "shard-000000.tar").exists():
        assert proc.poll() is None and time.monotonic() - started < 120, f"no shard written: {proc.stderr.read() if proc.stderr else ''}"
        time.sleep(0.01)
    return proc


def _stderr(proc: subprocess.Popen, timeout: float = 60) -> str:
    """stderr of ``proc`` once it ended within ``timeout``."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"satclip shards still running {timeout} s later")


def _check_stopped(err: str, workers: list[int], out: Path) -> str:
    """Check that a stopped run left no worker, showed no set in ``out`` and kept the partial folder to be resumed."""
    assert "Traceback" not in err, err[-2000:]
    assert not [p for p in workers if Path(f"/proc/{p}").exists()], "a worker outlived satclip shards"
    assert not out.exists(), "a half-written set was shown"
    assert resume.partial_folder(out).is_dir() and "run the same command again to resume" in err, err[-2000:]
    return err


def _ended(proc: subprocess.Popen, workers: list[int], out: Path, timeout: float = 60) -> str:
    """stderr of ``proc`` once it ended within ``timeout``, checked as :func:`_check_stopped` does."""
    return _check_stopped(_stderr(proc, timeout), workers, out)


def _resumed(cells: Path, out: Path) -> None:
    """The same command again completes the set from the partial folder."""
    saved = (resume.partial_folder(out) / resume.PROGRESS).is_file()
    done = subprocess.run(_shards_command(cells, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert ("resuming" in done.stderr) == saved, done.stderr[-2000:]
    assert json.loads((out / "manifest.json").read_text())["samples"] == 12 * 16
    assert not resume.partial_folder(out).exists()


@pytest.mark.slow
def test_shards_with_a_killed_worker_ends_with_the_message(cells: Path, tmp_path: Path) -> None:
    """The issue's reproduction: ``--workers 2``, one worker SIGKILLed after the first shard is
    written (3 times; SATCLIP_KILL_RUNS=50 for the full check); the first run is then resumed. A run whose
    last result was in before the kill lands ends complete, which is right; at most half may (else nothing was tested)."""
    rng = random.Random(1)
    runs, finished = int(os.environ.get("SATCLIP_KILL_RUNS", "3")), 0
    for run in range(runs):
        out = tmp_path / f"out{run}"
        proc = _start_shards(cells, out)
        time.sleep(rng.uniform(0.0, 0.5))
        while run == 0 and not (resume.partial_folder(out) / resume.PROGRESS).is_file() and proc.poll() is None:
            time.sleep(0.01)  # the run resumed below has a complete shard to resume from
        workers = _workers(proc.pid)
        if workers:
            os.kill(rng.choice(workers), signal.SIGKILL)
        err = _stderr(proc)
        if proc.returncode == 0:  # every result was in before the kill landed: the complete set is the right outcome
            assert "Traceback" not in err and json.loads((out / "manifest.json").read_text())["samples"] == 12 * 16, err[-2000:]
            finished += 1
            continue
        _check_stopped(err, workers, out)
        assert proc.returncode == 2, err[-2000:]
        assert "satclip shards: error: an encoding worker process" in err and "(killed by SIGKILL)" in err, err[-2000:]
        if run == 0:
            _resumed(cells, out)
    assert finished <= runs // 2, f"{finished} of {runs} runs ended before the kill: the worker's death was not exercised"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
def test_shards_interrupted_says_so_in_one_line(cells: Path, tmp_path: Path, how: str) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM to the parent."""
    out = tmp_path / "out"
    proc = _start_shards(cells, out, start_new_session=True)
    workers = _workers(proc.pid)
    if how == "Ctrl-C":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    err = _ended(proc, workers, out)
    assert proc.returncode == (130 if how == "Ctrl-C" else 143)
    assert err.strip().splitlines()[-1] == f"satclip shards: interrupted ({how})", err[-2000:]


@pytest.mark.slow
def test_a_killed_resource_tracker_is_harmless(cells: Path, tmp_path: Path) -> None:
    """The pool holds no semaphores: killing multiprocessing's resource tracker (ProcessPoolExecutor's
    queues gave five ``KeyError: '/mp-...'`` tracebacks) changes nothing."""
    out = tmp_path / "out"
    proc = _start_shards(cells, out)
    kids = [int(k) for task in Path(f"/proc/{proc.pid}/task").iterdir() for k in (task / "children").read_text().split()]
    tracker = [k for k in kids if b"resource_tracker" in Path(f"/proc/{k}/cmdline").read_bytes()]
    os.kill(tracker[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "Traceback" not in err and "KeyError" not in err, err[-2000:]
    assert json.loads((out / "manifest.json").read_text())["samples"] == 12 * 16
