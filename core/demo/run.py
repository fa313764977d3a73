"""``navstream demo`` itself: play the scenario, print the live table and the summary, clean up."""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TextIO

import redis.asyncio as aioredis

from navstream.app import App, ManualClock, SystemClock
from navstream.demo.backend import Backend, delete_prefix, ensure_prefix_unused, make_backend
from navstream.demo.replay import Replay, StepRow, plugin_section
from navstream.demo.scenario import Step, load_scenario
from navstream.demo.settings import demo_settings, with_audit_dir
from navstream.demo.show import LiveTable, Painter, counted
from navstream.demo.summary import summary
from navstream.render import Width, prose, resolve

#: Longest real pause between two steps, whatever the simulated gap: keeps the demo short.
MAX_PAUSE_S = 1.5


def pause_s(previous: Step | None, step: Step, speed: float, fast: bool) -> float:
    if fast or previous is None:
        return 0.0
    return min((step.at_s - previous.at_s) / speed, MAX_PAUSE_S)


@contextmanager
def quiet_logs(level: int = logging.ERROR) -> Iterator[None]:
    """The table already shows alerts and dead letters; JSON logs of them would only clutter
    stderr (alerts not at all: the summary lists every one, critical ones too). Restored
    afterwards, so an embedding process keeps its own levels."""
    logger = logging.getLogger("navstream")
    alerts = logging.getLogger("navstream.alerts")
    previous, previous_alerts = logger.level, alerts.level
    logger.setLevel(max(level, logger.getEffectiveLevel()))
    alerts.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(previous)
        alerts.setLevel(previous_alerts)


def _header(
    app: App, backend: Backend, steps: Sequence[Step], start_ms: int, speed: float, fast: bool, width: int | None
) -> list[str]:
    plugins = ", ".join(p.name for p in app.plugins.info) or "none"
    minutes = steps[-1].at_s / 60
    pace = "--fast, no pauses" if fast else f"speed {speed:g}x, at most {MAX_PAUSE_S:g} s per step"
    start = datetime.fromtimestamp(start_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    sources = list(dict.fromkeys(a.source for step in steps for a in step.attempts))
    lines = [
        f"navstream demo on {backend.label}, prefix {app.keys.prefix}",
        f"plugins: {plugins}",
        f"replaying {len(steps)} steps ({minutes:g} simulated minutes of a crypto desk) through the real consumer loop",
        *(
            [
                f"source {', '.join(sources)} runs for real (`navstream ingest`'s code), answered by an in-process "
                "stub venue"
            ]
            if sources
            else []
        ),
        f"simulated clock starts {start}; {pace}",
    ]
    return [part for line in lines for part in prose(line, width, "", "  ")]


def _footer(backend: Backend, prefix: str, removed: int | None, width: int | None) -> list[str]:
    if backend.real:
        return prose(f"removed the demo's {removed} keys under {prefix}:* from {backend.label}", width, "", "  ")
    return [
        *prose(
            "Run it against a real Redis (it refuses a prefix already in use, and deletes its keys at the end):", width
        ),
        *prose(f"navstream demo --redis-url redis://127.0.0.1:6379/0 --prefix {prefix}", width, "  ", "    "),
        *prose("A consumer with the demo's settings: navstream run --config config/demo.toml", width, "", "  "),
    ]


async def _play_all(
    app: App,
    clock: ManualClock,
    producer: aioredis.Redis,
    steps: Sequence[Step],
    start_ms: int,
    speed: float,
    fast: bool,
    emit: Callable[..., None],
    painter: Painter,
    width: int | None,
) -> None:
    """Startup, the live table row by row, shutdown, then the summary."""
    replay = Replay(app, clock, producer, start_ms, sources=any(step.attempts for step in steps))
    try:
        startup = await replay.start()
        if startup:
            emit(*prose(f"alerts at startup: {counted(startup).text}", width, "", "  "), "")
        nav = await plugin_section(app, "nav")
        live = LiveTable(steps, painter, width, str(nav.get("quote", "")) if nav else "")
        emit(live.header())
        previous: Step | None = None
        last: StepRow | None = None
        for step in steps:
            delay = pause_s(previous, step, speed, fast)
            if delay:
                await asyncio.sleep(delay)
            last = await replay.play(step)
            emit(live.row(last))
            previous = step
        await replay.stop()
    finally:
        await replay.aclose()
    assert last is not None  # load_scenario refuses an empty scenario
    emit("", painter.bold("summary"), *await summary(app, replay, last, width), "")


async def run_demo(
    redis_url: str | None,
    prefix: str | None,
    speed: float,
    fast: bool,
    out: TextIO | None = None,
    width: Width = "terminal",
) -> int:
    """Replay the scenario and print the live table and the summary to ``out``; returns 0.

    Every line fits ``width`` cells: by default ``out``'s terminal (``COLUMNS`` when set; a
    pipe or a file: no limit, see :func:`navstream.render.terminal_width`).

    Unexpected failures propagate: a demo that hides an error would show a healthy system.
    """
    if speed <= 0:
        raise ValueError(f"speed must be greater than 0, got {speed}")
    out = out or sys.stdout
    columns = resolve(width, out)
    steps = load_scenario()
    settings = demo_settings(redis_url, prefix)
    backend = make_backend(settings, redis_url)
    # The risk gate's audit log of a demo is nobody's record: it goes to a directory of the
    # demo's own, deleted with it, never to the user's state directory.
    audit = tempfile.TemporaryDirectory(prefix="navstream-demo-audit-")
    settings = with_audit_dir(settings, audit.name)
    start_ms = SystemClock().now_ms() // 1000 * 1000
    clock = ManualClock(start_ms)

    def emit(*lines: str) -> None:
        out.write("\n".join(lines) + "\n")
        out.flush()

    with quiet_logs():
        app = App.create(settings, connect=backend.connect, clock=clock)
        producer = backend.connect(True)
        owned, removed = False, None
        try:
            if backend.real:
                await ensure_prefix_unused(producer, app.keys.prefix, backend.label)
            owned = True
            emit(*_header(app, backend, steps, start_ms, speed, fast, columns), "")
            await _play_all(app, clock, producer, steps, start_ms, speed, fast, emit, Painter(out), columns)
        finally:
            try:
                if owned and backend.real:
                    removed = await delete_prefix(producer, app.keys.prefix)
            finally:
                await producer.aclose()
                await app.aclose()
                audit.cleanup()
        emit(*_footer(backend, app.keys.prefix, removed, columns))
    return 0
