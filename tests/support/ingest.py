"""Helpers of the ingest process's tests (tests/ingest/, and the metrics docs' test that runs an
ingest endpoint): the test source kinds (``procplugins.fake_source``, and a stub venue whose host
budget makes requests wait), a config file for ``navstream ingest``, and an :class:`Ingest` built
on a mock HTTP transport."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from navstream import hookimpl
from navstream.app import ManualClock
from navstream.config import load_settings
from navstream.ingest.httppool import HttpPool
from navstream.ingest.runner import Ingest
from navstream.plugin.manager import build_plugin_manager
from navstream.sources import Fetched, SourceContext, SourceSettings
from navstream.testing import START_MS
from support import REDIS_URL

__all__ = ["MODULE", "STUB", "StubPlugin", "StubSettings", "StubSource", "answers", "build", "write_config"]

MODULE = "procplugins.fake_source"


def _toml_value(value: Any) -> str:
    """A TOML value: JSON's spelling of a scalar or a list, an inline table for a dict."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def write_config(tmp_path: Path, prefix: str, sources: dict[str, Any]) -> Path:
    """``tmp_path/ingest.toml``: the real Redis under ``prefix``, the fake source kinds, ``sources``."""
    lines = [f'[redis]\nurl = "{REDIS_URL}"\nprefix = "{prefix}"\n', f'[plugins]\nmodules = ["{MODULE}"]\n']
    for name, table in sources.items():
        lines.append(f"[sources.{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    path = tmp_path / "ingest.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


STUB = "https://api.stub"


class StubSettings(SourceSettings, kw_only=True, forbid_unknown_fields=True, frozen=True):
    requests: int = 2


class StubSource:
    """Sends ``requests`` requests per fetch to a host whose budget is one request per 0.2 s
    (so the second waits for room), through the ingest process's pool."""

    def __init__(self, name: str, settings: StubSettings, ctx: SourceContext) -> None:
        self.name, self.venue, self.account, self.settings, self.ctx = name, "stub", None, settings, ctx
        ctx.http.limit(STUB + "/x", 1, window_s=0.2)

    async def fetch(self) -> Fetched:
        deadline = time.monotonic() + self.settings.timeout_s
        for _ in range(self.settings.requests):
            await self.ctx.http.request("GET", STUB + "/x", deadline=deadline)
        return Fetched([], [])

    async def aclose(self) -> None:
        pass


class StubPlugin:
    @hookimpl
    def navstream_sources(self, register: Any) -> None:
        register("stub-http", StubSettings, StubSource)


def answers(codes: list[int]) -> httpx.MockTransport:
    """Answers the codes in turn, then 200s."""

    def answer(request: httpx.Request) -> httpx.Response:
        code = codes.pop(0) if codes else 200
        return httpx.Response(code, headers={"Retry-After": "0"} if code in (418, 429) else {}, json={})

    return httpx.MockTransport(answer)


def build(backend: Any, sources: dict[str, Any], port: int, transport: httpx.MockTransport) -> Ingest:
    base = load_settings(env={}, overrides={"redis": {"prefix": backend.prefix}, "http": {"ingest_port": port}})
    settings = msgspec.structs.replace(base, extra={"sources": sources})
    kinds = build_plugin_manager(
        env={}, load_entrypoints=False, modules=[MODULE], extra=[("stub", StubPlugin())]
    ).source_kinds
    return Ingest(
        settings, kinds, backend.connect(True), clock=ManualClock(START_MS), http=HttpPool(transport=transport)
    )
