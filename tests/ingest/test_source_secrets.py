"""An upstream answer that echoes a credential never puts it into a log line, a
``source_status.error``, a problem or an alert: every credential a source reads from the
environment is registered with the redactor (navstream.logs), and every text made from an
answer goes through it (cut after masking, so a cut never leaves half a key).

Local HTTP stubs answer 401 with bodies that echo the key (plain, in a URL's query, URL-encoded,
straddling the excerpt's cut); the ingest process runs its real path and its real log pipeline.
Keys are random, built at run time.
"""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import msgspec
import pytest
from support import Backend
from support.httpstub import Canned, HttpStub

from navstream import logs
from navstream.config import load_settings
from navstream.contract.events import SourceStatus, decode_event
from navstream.ingest.httppool import BODY_EXCERPT, HttpPool
from navstream.ingest.runner import Ingest
from navstream.plugin.manager import build_plugin_manager
from navstream.sources import Fetched, SourceContext, redact

CG_PATH, ACCOUNT_PATH = "/api/v3/simple/price", "/fapi/v3/account"
KINDS = build_plugin_manager(env={}).source_kinds


def key() -> str:
    return secrets.token_urlsafe(30).replace("-", "A").replace("_", "b")


class Captured(logging.Handler):
    """Every record the ``navstream`` loggers emit, unfiltered (what any handler would see)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        out = []
        for r in self.records:
            out.append(r.getMessage())
            out.extend(str(v) for k, v in vars(r).items() if k in ("error", "problems", "message", "alert"))
        return "\n".join(out)


@pytest.fixture
def log_lines() -> Iterator[tuple[io.StringIO, Captured]]:
    """The production log pipeline (setup_logging) writing to a buffer, plus a raw capture."""
    root = logging.getLogger("navstream")
    saved = (root.handlers[:], root.level, root.propagate)
    stream = io.StringIO()
    logs.setup_logging("DEBUG", stream, repeat_window_s=0.0)
    raw = Captured()
    root.addHandler(raw)
    try:
        yield stream, raw
    finally:
        logs.stop_logging()
        root.handlers[:], root.level, root.propagate = saved


@pytest.fixture
async def stubs() -> AsyncIterator[tuple[HttpStub, HttpStub]]:
    with HttpStub() as coingecko, HttpStub() as futures:
        yield coingecko, futures


def forms(value: str) -> list[str]:
    return [value, quote(value, safe=""), value[:24], value[-24:]]


async def test_an_echoed_key_reaches_no_status_and_no_log(
    fake_backend: Backend, stubs: tuple[HttpStub, HttpStub], log_lines: tuple[io.StringIO, Captured]
) -> None:
    coingecko, futures = stubs
    cg_key, bn_key, bn_secret = key(), key(), key()
    env = {"CG_KEY": cg_key, "BN_KEY": bn_key, "BN_SECRET": bn_secret}
    echo_url = f"https://api.coingecko.com/api/v3/simple/price?ids=bitcoin&x_cg_demo_api_key={cg_key}"
    # 1: a JSON error quoting the key and the URL it came with; 2: the key straddling the cut of
    # the body's excerpt; 3: a success whose value is the key (a problem quotes it)
    coingecko.add(
        CG_PATH,
        Canned(
            401,
            json={
                "status": {
                    "error_code": 10002,
                    "error_message": f"Invalid key {cg_key} for {echo_url} ({quote(cg_key)})",
                }
            },
        ),
        Canned(401, body="x" * (BODY_EXCERPT - 30) + cg_key + " was refused"),
        Canned(200, json={"bitcoin": {"usd": cg_key, "last_updated_at": 1}}),
    )
    # Binance's own error shape echoing the key, then an HTML page echoing key and secret
    futures.add(
        ACCOUNT_PATH,
        Canned(401, json={"code": -2015, "msg": f"Invalid API-key {bn_key}, IP, or permissions"}),
        Canned(
            502,
            body=f"<html>upstream said: key={bn_key} secret {bn_secret} "
            f"url=https://fapi.binance.com{ACCOUNT_PATH}?apiKey={bn_key}</html>",
        ),
        Canned(400, json={"code": -1100, "msg": f"Illegal characters found in parameter '{bn_secret}'"}),
    )
    settings = load_settings(env={}, overrides={"redis": {"prefix": fake_backend.prefix}})
    cg = {"base_url": coingecko.url + "/api/v3", "ids": {"BTC": "bitcoin"}}
    bn = {"kind": "binance-usdm-account", "base_url": futures.url, "account": "futures-main"}
    cg["api_key_env"], bn["api_key_env"], bn["api_secret_env"] = env  # the variables' names
    settings = msgspec.structs.replace(settings, extra={"sources": {"coingecko": cg, "bn": bn}})
    redis = fake_backend.connect(decode_responses=True)
    ingest = Ingest(settings, KINDS, redis, http=HttpPool(timeout_s=5.0), env=env)
    try:
        results = [await ingest.run_once() for _ in range(3)]
        events = [decode_event(f) for _, f in await redis.xrange(f"{fake_backend.prefix}:events")]
        alerts = [f for _, f in await redis.xrange(f"{fake_backend.prefix}:alerts")]
    finally:
        await ingest.aclose()
        await redis.aclose()
    assert results[0] == results[1] == {"coingecko": False, "bn": False}
    # the requests did carry the credentials (the masking is not a key that never left)
    assert coingecko.to(CG_PATH)[0].headers["x-cg-demo-api-key"] == cg_key
    assert futures.to(ACCOUNT_PATH)[0].headers["x-mbx-apikey"] == bn_key

    statuses = [e for e in events if isinstance(e, SourceStatus)]
    errors = "\n".join(e.error or "" for e in statuses)
    assert len(statuses) == 6 and "***" in errors
    assert "Invalid key ***" in errors and "credentials rejected" in errors and "HTTP 502" in errors
    logs.stop_logging()
    stream, raw = log_lines
    written = stream.getvalue()
    assert "source_failed" in written
    for name, value in env.items():
        for form in forms(value):
            assert form not in errors, (name, form, errors)
            assert form not in str(alerts), (name, alerts)
            assert form not in written, (name, written)
            assert form not in raw.text(), (name, raw.text())


def test_registered_values_are_masked_anywhere() -> None:
    value = key()
    assert redact(f"path /v1/{value}/x") == f"path /v1/{value}/x"
    SourceContext(http=None, cache=None, clock=None, env={"K": value}).secret("s", "api_key_env", "K")  # type: ignore[arg-type]
    assert redact(f"path /v1/{value}/x and {quote(value + '/', safe='')}") == "path /v1/***/x and ***%2F"
    assert logs.clip("a" * 10 + value, 20) == "a" * 10 + "***"
    assert Fetched(problems=[f"got {value!r}"]).problems == ["got '***'"]


def test_short_values_are_not_registered() -> None:
    logs.register_secret("usd")
    assert redact("usd price") == "usd price"


def test_the_log_pipeline_masks_a_registered_value_in_every_field(log_lines: tuple[io.StringIO, Captured]) -> None:
    value = key()
    logs.register_secret(value)
    log = logging.getLogger("navstream.test")
    try:
        raise RuntimeError(f"upstream echoed {value}")
    except RuntimeError:
        log.exception("failed with %s", value, extra={"event": "x", "detail": {"body": [value]}})
    logs.stop_logging()
    stream, _ = log_lines
    written = stream.getvalue()
    assert "upstream echoed ***" in written and "failed with ***" in written
    assert value not in written
