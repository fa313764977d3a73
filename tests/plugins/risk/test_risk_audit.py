"""The risk gate's audit log: appended by a background thread, rotated, and never in the way."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from navstream.plugins.risk.audit import WRITE_BATCH, AuditLog


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_are_appended_as_json_lines_in_order(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "decisions.jsonl"
    path.parent.mkdir()
    path.write_text('{"earlier": "run"}\n')  # an existing log is appended to, never truncated
    log = AuditLog(path)
    for n in range(100):
        assert log.submit({"n": n, "notional": Decimal("0.00000001"), "order_id": f"o-{n}"})
    log.close()
    got = lines(path)
    assert got[0] == {"earlier": "run"}
    assert [r["n"] for r in got[1:]] == list(range(100))
    assert got[1]["notional"] == "0.00000001"  # money stays an exact decimal string
    assert log.stats.written == 100 and log.stats.dropped == log.stats.failed == 0


def test_the_file_is_opened_for_append(tmp_path: Path) -> None:
    """O_APPEND: another writer's lines (a second replica on a shared volume) are never overwritten."""
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    assert log._fd is not None and os.get_blocking(log._fd)  # a plain file descriptor
    import fcntl

    assert fcntl.fcntl(log._fd, fcntl.F_GETFL) & os.O_APPEND
    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0  # created unreadable to others
    with open(path, "a") as other:
        other.write('{"other": 1}\n')
    log.submit({"mine": 1})
    log.close()
    assert lines(path) == [{"other": 1}, {"mine": 1}]


def test_rotation_keeps_the_newest_backups(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = AuditLog(path, max_bytes=200, backups=2)
    for n in range(40):
        log.submit({"n": n, "pad": "x" * 20})
    log.close()
    assert log.stats.rotations >= 3
    kept = [path.with_name("d.jsonl.2"), path.with_name("d.jsonl.1"), path]
    assert not path.with_name("d.jsonl.3").exists()
    numbers = [r["n"] for p in kept if p.exists() for r in lines(p)]
    assert numbers == sorted(numbers) and numbers[-1] == 39  # oldest file first, nothing reordered
    assert all(p.stat().st_size <= 200 + 40 for p in kept[:2])  # rotated just past the size


def test_submit_never_blocks_and_counts_what_it_drops(tmp_path: Path) -> None:
    """A writer that cannot keep up costs records, counted, never the loop's time."""
    log = AuditLog(tmp_path / "slow.jsonl", queue_size=5)
    gate = threading.Event()
    original = os.write

    def slow_write(fd: int, data: bytes) -> int:
        gate.wait(5)
        return original(fd, data)

    os_write = os.write
    try:
        os.write = slow_write  # type: ignore[assignment]
        started = time.perf_counter()
        accepted = sum(log.submit({"n": n}) for n in range(50))
        elapsed = time.perf_counter() - started
    finally:
        os.write = os_write  # type: ignore[assignment]
        gate.set()
    log.close()
    assert elapsed < 1.0
    assert accepted + log.stats.dropped == 50
    assert 5 <= accepted <= 6 and log.stats.dropped >= 44  # the queue, plus the one being written


def test_a_refusing_disk_is_counted_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "full.jsonl"
    log = AuditLog(path)
    real_fd = log._fd
    assert real_fd is not None
    log._fd = os.open(os.devnull, os.O_RDONLY)  # every write now fails with EBADF
    try:
        assert log.submit({"n": 1})
        deadline = time.monotonic() + 5
        while log.stats.failed == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.close(real_fd)
    log.close()
    assert log.stats.failed == 1 and log.stats.written == 0
    assert "OSError" in log.stats.last_error or "Error" in log.stats.last_error


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    for kwargs in ({"max_bytes": 0}, {"backups": 0}, {"queue_size": 0}):
        with pytest.raises(ValueError):
            AuditLog(tmp_path / "x.jsonl", **kwargs)  # type: ignore[arg-type]


def test_a_writer_that_cannot_finish_in_time_reports_what_it_left(tmp_path: Path) -> None:
    """close() never waits past its timeout, and says how much was left unwritten."""
    log = AuditLog(tmp_path / "stuck.jsonl")
    gate = threading.Event()
    original = os.write

    def stuck_write(fd: int, data: bytes) -> int:
        gate.wait(5)
        return original(fd, data)

    os.write = stuck_write  # type: ignore[assignment]
    try:
        for n in range(4):
            log.submit({"n": n})
        time.sleep(0.05)  # the writer is now inside its first write (of one record, or of all four)
        assert log.close(timeout=0.05) is False
        # Those in the queue and those the writer holds: none of the four was written.
        assert log.stats.dropped == 4 and "did not finish" in log.stats.last_error
        assert log.stats.written == 0
    finally:
        os.write = original  # type: ignore[assignment]
        gate.set()


def test_a_record_that_breaks_the_encoder_is_counted_and_the_writer_lives_on(tmp_path: Path) -> None:
    class Unencodable:
        pass

    log = AuditLog(tmp_path / "audit.jsonl", encode=lambda record: record)
    assert log.submit({"n": Unencodable()})
    assert log.submit({"n": 2})
    deadline = time.monotonic() + 5
    while log.stats.written + log.stats.failed < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (log.stats.written, log.stats.failed) == (1, 1) and log.alive
    assert "Unencodable" in log.stats.last_error or "Encode" in log.stats.last_error
    assert log.close()
    assert log.alive  # stopped on purpose: not a dead writer


def test_records_that_wait_are_written_together_whole_and_in_order(tmp_path: Path) -> None:
    """The writer takes what waits in the queue and appends it with one write (up to
    WRITE_BATCH records): a burst of decisions costs a few syscalls, not one each."""
    path = tmp_path / "burst.jsonl"
    log = AuditLog(path)
    gate = threading.Event()
    original = os.write
    calls: list[int] = []

    def counted_write(fd: int, data: bytes) -> int:
        gate.wait(5)
        calls.append(data.count(b"\n"))
        return original(fd, data)

    os.write = counted_write  # type: ignore[assignment]
    try:
        for n in range(1000):
            assert log.submit({"n": n})
        gate.set()
        assert log.close(timeout=5)
    finally:
        os.write = original  # type: ignore[assignment]
    assert [r["n"] for r in lines(path)] == list(range(1000))
    assert sum(calls) == 1000 and log.stats.written == 1000
    assert len(calls) <= 1 + 1000 // WRITE_BATCH + 1  # the first alone, then full batches
    assert max(calls) == WRITE_BATCH


def test_a_write_cut_short_by_the_disk_leaves_no_torn_line(tmp_path: Path) -> None:
    """A write that got part of its lines out before the disk refused is cut back: the next
    record starts a line of its own, and every line of the file is a whole record."""
    path = tmp_path / "torn.jsonl"
    log = AuditLog(path)
    original = os.write
    state = {"calls": 0}

    def short_then_full(fd: int, data: bytes) -> int:
        state["calls"] += 1
        if state["calls"] == 1:
            return original(fd, data[:7])  # a part of the first line
        if state["calls"] == 2:
            raise OSError(28, "No space left on device")
        return original(fd, data)

    os.write = short_then_full  # type: ignore[assignment]
    try:
        assert log.submit({"n": 1})
        deadline = time.monotonic() + 5
        while log.stats.failed < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.submit({"n": 2})
        assert log.close(timeout=5)
    finally:
        os.write = original  # type: ignore[assignment]
    assert [r["n"] for r in lines(path)] == [2]
    assert (log.stats.written, log.stats.failed) == (1, 1)


def test_records_given_up_at_close_are_dropped_once_never_written_after(tmp_path: Path) -> None:
    """close() that times out counts what is left as dropped; the writer, once it wakes, writes
    nothing more, and a write it was inside moves its records from dropped to written: no
    record is counted twice."""
    log = AuditLog(tmp_path / "late.jsonl")
    gate = threading.Event()
    original = os.write

    def slow_write(fd: int, data: bytes) -> int:
        gate.wait(5)
        return original(fd, data)

    os.write = slow_write  # type: ignore[assignment]
    try:
        for n in range(3):
            log.submit({"n": n})
        time.sleep(0.05)
        assert log.close(timeout=0.05) is False
        gate.set()
        time.sleep(0.3)  # the writer wakes and finishes its write
    finally:
        os.write = original  # type: ignore[assignment]
    assert log.stats.written + log.stats.dropped == 3
