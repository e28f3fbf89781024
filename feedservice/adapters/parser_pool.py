"""The parser process pool: feed parsing (CPU-bound) in spawned processes, with wide pipes.

The pool's processes import this module to run ``exit_with_parent``, so it imports only the
standard library: they start fast.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

log = logging.getLogger("feedservice")

PIPE_SIZE = 1 << 20


def exit_with_parent(parent: int) -> None:
    """Exit when the process that started this one is gone (even after a SIGKILL, which leaves a
    pool worker's queue open), instead of lingering as an orphan.

    A parser process also ignores SIGINT: Ctrl-C in a terminal reaches the whole process group,
    and the parent, which owns the pool, shuts it down; without this each parser printed a
    KeyboardInterrupt traceback on the way out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


class ParserPool:
    """Processes for feed parsing, started on first use; ``executor()`` is None for one process.

    ``processes`` = 0 means one per CPU core; fewer than two means parsing in threads.
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes or (os.cpu_count() or 1)
        self._executor: ProcessPoolExecutor | None = None

    def executor(self) -> ProcessPoolExecutor | None:
        if self.processes < 2:
            return None
        if self._executor is None:
            # spawn: fresh interpreters, not forks of a process with threads.
            ctx = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(
                max_workers=self.processes, mp_context=ctx, initializer=exit_with_parent, initargs=(os.getpid(),)
            )
            widen_pipes(self._executor)
        return self._executor

    def start(self) -> float:
        """Start the processes now and wait until each answers; returns the seconds taken.

        Left to the first collect, starting them (fresh interpreters importing lxml, feedparser
        and nh3) stalls that collect for a second or two while its fetched feeds wait; `run`
        starts them when it begins scheduling, so no collect waits for them.
        """
        started = time.perf_counter()
        pool = self.executor()
        if pool is not None:
            # Submitted together, before any process is idle: the pool starts one process for each.
            pids = {f.result() for f in [pool.submit(os.getpid) for _ in range(self.processes)]}
            log.debug("parser processes ready: %s", sorted(pids))
        return time.perf_counter() - started

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def widen_pipes(pool: Executor) -> None:
    """Give the pool's two pipes room for several feeds (Linux; elsewhere a no-op).

    A feed's bytes going out and its parsed articles coming back are ~100 KB each, more than a
    pipe's default 64 KB: a process then blocked writing its result until the parent's result
    thread (which shares the parent's GIL with the fetching and the storing) read it, and sat
    idle for about a third of a cold collect. With 1 MB pipes, processes hand results over and go
    on. The queues are the executor's private attributes (CPython 3.11); if they are not there,
    or the kernel refuses, the pool works as it did.
    """
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    readers: list[Any] = [getattr(getattr(pool, n, None), "_reader", None) for n in ("_call_queue", "_result_queue")]
    if set_size is None or None in readers:
        log.debug("parser pool pipes left at their default size")
        return
    for reader in readers:
        try:
            fcntl.fcntl(reader.fileno(), set_size, PIPE_SIZE)
        except OSError as exc:  # above /proc/sys/fs/pipe-max-size, or the user's pipe quota
            log.debug("parser pool pipes left at their default size: %s", exc)
            return
