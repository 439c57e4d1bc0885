"""An ordered ``map`` over spawned worker processes that can not hang when a worker dies.

``concurrent.futures.ProcessPoolExecutor`` hangs when a worker is killed while it sends a result
bigger than a pipe buffer (a Major TOM cell's patches are tens of MB): its manager thread has
already started ``recv()`` on the one result pipe all workers share, the dead worker held that
pipe's write lock, so the message is never completed, the death is never noticed and the caller
waits forever (``satclip shards --workers 2`` hung in 3 of 10 kills). Here every worker has a task
pipe and a result pipe of its own, whose other end only the parent holds: a worker that dies
mid-message closes its end, the parent's ``recv()`` ends with ``EOFError`` and its sentinel is
watched with the pipes, so a death in any phase (starting, reading a task, working, sending) is
raised at once as :class:`WorkerDied`. Workers ignore Ctrl-C (the parent stops them) and exit
when the parent's end of their task pipe closes, so none outlives a parent that was killed.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import traceback
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class WorkerDied(RuntimeError):
    """A worker process ended before the jobs did (killed, out of memory, a crash): its ``pid``,
    ``how`` (``killed by SIGKILL``, ``exit status 1``) and the number of results ``done`` by then."""

    def __init__(self, pid: int | None, how: str, *, done: int) -> None:
        super().__init__(f"worker process {pid} died ({how}) after {done} results")
        self.pid, self.how, self.done = pid, how, done


class RemoteTraceback(Exception):
    """The traceback of an error raised in a worker (attached as the error's ``__cause__``)."""


def _serve(fn: Callable, tasks: Connection, *, results: Connection) -> None:
    """Worker loop: a thread receives jobs (so the parent's sends never wait on this worker's
    work), the main thread runs them in order and sends ``(ok, value, traceback text)`` back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def receive() -> None:
        while True:
            try:
                inbox.put(tasks.recv())
            except (EOFError, OSError):
                os._exit(0)  # the parent is done, failed or gone

    threading.Thread(target=receive, daemon=True).start()
    while True:
        job = inbox.get()
        try:
            reply = (True, fn(job), "")
        except BaseException as err:
            reply = (False, err, traceback.format_exc())
        try:
            results.send(reply)
        except (BrokenPipeError, ConnectionResetError):
            os._exit(0)
        except Exception as err:  # an unpicklable result or error
            results.send((False, RuntimeError(f"a worker's {'result' if reply[0] else 'error'} could not be sent back: {err!r}"), ""))


def _died(process, done: int) -> WorkerDied:
    process.join(1)
    code = process.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
    return WorkerDied(process.pid, how, done=done)


def ordered_map(fn: Callable[[T], R], jobs: Iterable[T], *, workers: int, ahead: int = 16) -> Generator[R, None, None]:
    """``map(fn, jobs)`` in ``workers`` spawned processes, results in input order, at most
    ``ahead * workers`` jobs sent ahead of the one yielded (bounds what is read ahead).

    ``fn`` and the jobs must pickle. An error raised by ``fn`` is raised here (its worker traceback
    as ``__cause__``), one in reading ``jobs`` too, and :class:`WorkerDied` when a worker ends;
    on any of them, on Ctrl-C and when the generator is closed, the workers are killed and reaped
    before it propagates. Close the generator (``contextlib.closing``) when leaving a loop early."""
    ctx = get_context("spawn")
    processes: list = []
    senders: list[Connection] = []
    receivers: list[Connection] = []
    failed = True
    try:
        with _sigint_ignored():  # inherited through exec: a Ctrl-C while a worker starts up prints nothing there
            _start(ctx, fn, workers=workers, processes=processes, senders=senders, receivers=receivers)
        yield from _run(jobs, processes, senders=senders, receivers=receivers, window=ahead * workers)
        failed = False
    finally:
        for conn in senders + receivers:
            conn.close()  # a worker that is still alive exits on its task pipe's end
        for process in processes:
            if failed:
                process.kill()
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _start(ctx, fn: Callable, *, workers: int, processes: list, senders: list[Connection], receivers: list[Connection]) -> None:
    """Start ``workers`` processes serving ``fn``, each with its own task and result pipe."""
    for _ in range(workers):
        task_out, task_in = ctx.Pipe(duplex=False)
        result_out, result_in = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_serve, args=(fn, task_out), kwargs={"results": result_in}, daemon=True)
        try:
            process.start()
        except OSError as err:  # it died before it read its start-up data
            task_in.close()
            result_out.close()
            raise WorkerDied(None, f"at start-up: {err}", done=0) from None
        finally:
            task_out.close()
            result_in.close()
        processes.append(process)
        senders.append(task_in)
        receivers.append(result_out)


def _run(jobs: Iterable[T], processes: list, *, senders: list[Connection], receivers: list[Connection], window: int) -> Iterator:
    """The dispatch loop of :func:`ordered_map`: jobs to the least busy worker, results reordered."""
    todo: Iterator[T] | None = iter(jobs)
    queued: list[deque[int]] = [deque() for _ in processes]  # per worker, the job numbers it holds
    ready: dict[int, object] = {}
    sent = done = 0
    watched = {**{c: i for i, c in enumerate(receivers)}, **{p.sentinel: i for i, p in enumerate(processes)}}
    while True:
        while todo is not None and sent - done < window:
            job = next(todo, _END)
            if job is _END:
                todo = None
                break
            w = min(range(len(processes)), key=lambda i: len(queued[i]))
            try:
                senders[w].send(job)
            except OSError:
                raise _died(processes[w], done) from None
            queued[w].append(sent)
            sent += 1
        while done in ready:
            yield ready.pop(done)
            done += 1
        if todo is None and done == sent:
            return
        if todo is not None and sent - done < window:
            continue  # the results just yielded made room: send before waiting (nothing may be outstanding)
        for handle in wait(list(watched)):
            w = watched[handle]
            if handle is not receivers[w]:
                raise _died(processes[w], done)
            try:
                ok, value, remote = receivers[w].recv()
            except (EOFError, OSError):
                raise _died(processes[w], done) from None
            if not ok:
                if remote:
                    value.__cause__ = RemoteTraceback(remote)
                raise value
            ready[queued[w].popleft()] = value


_END = object()
