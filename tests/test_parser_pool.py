"""adapters/parser_pool.py: parser processes that start ahead, with pipes wide enough for a feed."""

from __future__ import annotations

import fcntl
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from feedservice.adapters.parser_pool import PIPE_SIZE, ParserPool, widen_pipes


def test_processes_start_ahead_with_wide_pipes() -> None:
    pool = ParserPool(2)
    try:
        assert pool.start() > 0
        executor = pool.executor()
        assert executor is not None and executor is pool.executor()  # one pool, made once
        processes = set(executor._processes)  # the processes the pool started, by pid
        assert len(processes) == 2 and os.getpid() not in processes
        # Room for several feeds in each direction, so a process does not wait for the parent to read.
        for name in ("_call_queue", "_result_queue"):  # CPython's private queues, which typeshed leaves out
            reader = getattr(executor, name)._reader
            assert fcntl.fcntl(reader.fileno(), fcntl.F_GETPIPE_SZ) >= PIPE_SIZE
        assert executor.submit(os.getpid).result() in processes
    finally:
        pool.close()
    assert pool._executor is None


def test_one_process_parses_in_threads() -> None:
    pool = ParserPool(1)
    pool.start()
    assert pool.executor() is None


def test_zero_means_one_per_core() -> None:
    assert ParserPool(0).processes == (os.cpu_count() or 1)


def test_a_pool_without_the_private_queues_is_left_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    """The widening reads CPython's private attributes: where they are missing it does nothing."""
    caplog.set_level("DEBUG", logger="feedservice")
    with ThreadPoolExecutor(max_workers=1) as other:
        widen_pipes(other)
        assert other.submit(os.getpid).result() == os.getpid()
    assert "left at their default size" in caplog.text
