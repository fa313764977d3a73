"""The risk gate's audit log: every decision with its inputs, as JSON lines, never in the way.

The old gate rewrote a whole JSONL file for each veto and blocked the execution loop in bursts.
Here the loop only puts a record on a bounded queue (``submit`` never blocks); one background
thread appends it to a file opened with ``O_APPEND`` (whole lines per ``write``: what waits in
the queue, up to ``WRITE_BATCH`` records, in one call, so concurrent writers never interleave a
line and a crash tears at most the last) and rotates the file when it grows past its size.
If the thread cannot keep up, or the disk refuses, the record is counted as dropped or failed
and the loop goes on deciding: the plugin reports those counts and alerts on them.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
_STOP = object()
#: Records the writer takes from the queue at most for one ``write``.
WRITE_BATCH = 256


def _plain(value: Any) -> Any:
    """Decimals as exact plain decimal strings (``0.00000001``, never ``1E-8``), all the way down."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass
class AuditStats:
    written: int = 0
    #: Records the queue had no room for (the writer fell behind): never written.
    dropped: int = 0
    #: Records the file refused (disk full, permissions): never written.
    failed: int = 0
    rotations: int = 0
    last_error: str = ""


class AuditLog:
    """Append-only JSON-lines log written by a background thread.

    :param path: the log file; rotated copies are ``path.1`` (newest) to ``path.<backups>``.
    :param max_bytes: rotate once the file is at least this large.
    :param backups: rotated copies kept (the oldest is deleted).
    :param queue_size: records that may wait for the writer before new ones are dropped.
    :param encode: makes a submitted record JSON-encodable, or its line's bytes, in the writer
        thread, so the loop pays for neither that nor the encoding (default: Decimals to exact
        strings).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 64 << 20,
        backups: int = 10,
        queue_size: int = 100_000,
        encode: Callable[[Any], Any] | None = None,
    ) -> None:
        if max_bytes <= 0 or backups < 1 or queue_size < 1:
            raise ValueError("max_bytes must be > 0, backups >= 1 and queue_size >= 1")
        self.path = Path(path)
        #: Turns a submitted record into what is written (the writer thread calls it).
        self.encode = encode or _plain
        self.max_bytes = max_bytes
        self.backups = backups
        self.stats = AuditStats()
        self._closing = False
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()  # guards stats shared with the loop
        #: Records the writer took from the queue and has not written (or failed) yet.
        self._in_hand = 0
        #: Set by a :meth:`close` that timed out: the writer writes nothing more.
        self._abandoned = False
        self._fd: int | None = self._open()
        self._thread = threading.Thread(target=self._run, name=f"navstream-audit:{self.path.name}", daemon=True)
        self._thread.start()

    def submit(self, record: Any) -> bool:
        """Queue one record (encoded by the writer thread: it must not change afterwards);
        never blocks. False when it was dropped because the writer is behind."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                self.stats.dropped += 1
            return False
        return True

    @property
    def alive(self) -> bool:
        """Whether the writer thread runs, or was stopped on purpose by :meth:`close`."""
        return self._closing or self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued, then stop the thread, which closes the file (it alone touches
        it: closing it from here could race a write). False if the writer did not finish in
        time; the records it had not written are counted as dropped."""
        self._closing = True
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(_STOP, timeout=timeout)  # a full queue must not hold up a shutdown
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            return True
        with self._queue.mutex:  # records still queued (the stop marker, if not taken yet, is none)
            waiting = sum(1 for r in self._queue.queue if r is not _STOP)
        with self._lock:  # what waits in the queue, and what the writer holds unwritten
            # Given up: the writer, once it wakes, writes nothing more (what it holds is counted
            # here as dropped, never later as written too).
            self._abandoned = True
            self.stats.dropped += waiting + self._in_hand
            self.stats.last_error = f"audit writer did not finish within {timeout:g}s"
        return False

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def _run(self) -> None:
        while True:
            records = [self._queue.get()]
            while len(records) < WRITE_BATCH:  # what else waits: written together, one write()
                try:
                    records.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in records
            batch = [r for r in records if r is not _STOP]
            with self._lock:
                self._in_hand = len(batch)
            self._write(batch)
            if stop:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                return

    def _write(self, records: list[Any]) -> None:
        """Append whole lines with one ``write`` (O_APPEND: never interleaved with another
        writer's, and at most the last line torn by a crash, as with one line a call); a record
        that cannot be encoded fails alone."""
        lines: list[bytes] = []
        for record in records:
            try:
                encoded = self.encode(record)
                lines.append((encoded if isinstance(encoded, bytes) else _encode(encoded)) + b"\n")
            except Exception as exc:  # noqa: BLE001 - a record that cannot be encoded: counted, never fatal
                self._failed(exc, 1)
        if not lines:
            return
        try:
            fd = self._fd if self._fd is not None else self._open()
            self._fd = fd
            size = os.fstat(fd).st_size
            start = 0
            for n, line in enumerate(lines, 1):  # rotated just past the size, as line by line
                size += len(line)
                if size >= self.max_bytes or n == len(lines):
                    self._append(lines[start:n])
                    start = n
                    if size >= self.max_bytes:
                        self._rotate()
                        size = 0
        except Exception as exc:  # noqa: BLE001 - the disk: counted, never fatal
            self._failed(exc, len(lines) - start)

    def _append(self, lines: list[bytes]) -> None:
        fd = self._fd
        assert fd is not None
        with self._lock:
            if self._abandoned:  # close() gave up and counted these as dropped
                return
        before = os.fstat(fd).st_size
        data = b"".join(lines)
        try:
            while data:  # a regular file takes it whole; a short write (disk nearly full) goes on
                data = data[os.write(fd, data) :]
        except OSError:
            # A part written before the error would leave a torn line that the next record's
            # line joins: cut the file back (this writer alone writes this file).
            try:
                os.ftruncate(fd, before)
            except OSError:
                pass
            raise
        with self._lock:
            if self._abandoned:  # close() gave up during this write and counted these dropped
                self.stats.dropped -= len(lines)
            self.stats.written += len(lines)
            self._in_hand -= len(lines)

    def _failed(self, exc: BaseException, count: int) -> None:
        with self._lock:
            if self._abandoned:  # already counted as dropped by close()
                return
            self.stats.failed += count
            self._in_hand -= count
            self.stats.last_error = f"{type(exc).__name__}: {exc}"

    def _rotate(self) -> None:
        """``path`` -> ``path.1`` -> ... -> ``path.<backups>`` (the oldest deleted), then a new file."""
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        oldest = self.path.with_name(f"{self.path.name}.{self.backups}")
        if oldest.exists():
            oldest.unlink()
        for n in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{n}")
            if src.exists():
                src.rename(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._fd = self._open()
        with self._lock:
            self.stats.rotations += 1
