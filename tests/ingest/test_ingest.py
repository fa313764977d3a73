"""The ingest process (issue 5): source kinds from plugins, config per instance, one
``source_status`` after every attempt, failures said and never published as values, Redis
outages survived; and the host budgets, HTTP pool and price cache under it.

The source here is ``procplugins.fake_source`` (loaded by dotted path, like any plugin); the
built-in sources are tested against a real HTTP server in tests/plugins/sources/test_sources.py.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from support import START_MS
from support.httpstub import Canned, HttpStub
from support.ingest import MODULE, write_config

from navstream import Price, hookimpl
from navstream.app import ManualClock
from navstream.cli import main
from navstream.config import ConfigError, load_settings
from navstream.ingest.httppool import HttpPool, check, retry_after_s
from navstream.ingest.pricecache import PriceCache
from navstream.ingest.ratelimit import HostLimiter, RateLimited
from navstream.ingest.runner import Ingest, IngestError, configure
from navstream.plugin.manager import PluginError, build_plugin_manager
from navstream.sources import SourceSettings, redact


def kinds(*extra: tuple[str, object]) -> Any:
    return build_plugin_manager(env={}, load_entrypoints=False, modules=[MODULE], extra=extra).source_kinds


def settings(prefix: str, sources: dict[str, Any]) -> Any:
    base = load_settings(env={}, overrides={"redis": {"prefix": prefix}})
    return msgspec.structs.replace(base, extra={"sources": sources})


BUILT: list[Ingest] = []


def ingest(backend: Any, sources: dict[str, Any], **kw: Any) -> Ingest:
    redis = backend.connect(True)
    try:
        built = Ingest(
            settings(backend.prefix, sources), kinds(), redis, clock=kw.pop("clock", ManualClock(START_MS)), **kw
        )
    except BaseException:
        BUILT.append(redis)  # type: ignore[arg-type]  # closed by the fixture all the same
        raise
    BUILT.append(built)
    return built


@pytest.fixture(autouse=True)
async def _close_what_was_built() -> Any:
    yield
    while BUILT:
        item = BUILT.pop()
        if isinstance(item, Ingest):
            await item.aclose()
            await item.redis.aclose()
        else:
            await item.aclose()  # type: ignore[unreachable]


async def entries(i: Ingest, stream: str = "events") -> list[dict[str, str]]:
    return [f for _, f in await i.redis.xrange(f"{i.keys.prefix}:{stream}")]


# --- kinds and config ---------------------------------------------------------------------------


def test_plugins_contribute_source_kinds_and_clashes_are_refused() -> None:
    assert set(kinds()) == {"fake-prices"}
    assert kinds()["fake-prices"].plugin == MODULE

    class Twice:
        @hookimpl
        def navstream_sources(self, register: Any) -> None:
            from procplugins.fake_source import FakeSettings, FakeSource

            register("fake-prices", FakeSettings, FakeSource)

    with pytest.raises(PluginError, match="registered twice"):
        kinds(("twice", Twice()))

    class Untyped:
        @hookimpl
        def navstream_sources(self, register: Any) -> None:
            register("loose", dict, lambda *a: None)

    with pytest.raises(PluginError, match="must subclass navstream.sources.SourceSettings"):
        kinds(("untyped", Untyped()))


def test_each_instance_is_decoded_with_its_kinds_settings_and_every_problem_is_named() -> None:
    ok = configure(settings("p", {"cg": {"kind": "fake-prices", "prices": {"BTC": "1"}, "interval_s": 5}}), kinds())
    kind, decoded = ok["cg"]
    assert kind.kind == "fake-prices" and decoded.interval_s == 5 and isinstance(decoded, SourceSettings)
    with pytest.raises(ConfigError) as exc:
        configure(
            settings(
                "p",
                {
                    "a": {"kind": "nope"},
                    "b": {"kind": "fake-prices", "interval_s": 0},
                    "c": {"kind": "fake-prices", "typo": 1},
                    "d": "not a table",
                },
            ),
            kinds(),
        )
    text = str(exc.value)
    assert "[sources.a]: unknown source kind 'nope' (installed: fake-prices)" in text
    assert "[sources.b]" in text and "`sources.b.interval_s`" in text
    assert "[sources.c]" in text and "typo" in text and "[sources.d] must be a table" in text


def test_a_consumer_sharing_the_file_accepts_the_sources_section(tmp_path: Path) -> None:
    from navstream.config import validate_plugin_sections

    s = settings("p", {"cg": {"kind": "coingecko"}})
    assert validate_plugin_sections(s, {}) == {}


async def test_a_missing_credential_fails_at_startup_naming_the_variable_not_a_value(fake_backend: Any) -> None:
    sources = {"cg": {"kind": "fake-prices", "token_env": "NAVSTREAM_TEST_TOKEN"}}
    with pytest.raises(
        IngestError, match=r"\[sources.cg\] token_env: environment variable NAVSTREAM_TEST_TOKEN is not set"
    ):
        ingest(fake_backend, sources, env={})
    built = ingest(fake_backend, sources, env={"NAVSTREAM_TEST_TOKEN": "s3cret"})
    assert built.runs["cg"].source.token == "s3cret"  # type: ignore[attr-defined]
    with pytest.raises(IngestError, match="no \\[sources.<name>\\] section is enabled"):
        ingest(fake_backend, {"cg": {"kind": "fake-prices", "enabled": False}})


# --- attempts -----------------------------------------------------------------------------------


async def test_a_successful_fetch_publishes_its_events_then_an_ok_status(backend: Any) -> None:
    i = ingest(backend, {"cg": {"kind": "fake-prices", "prices": {"BTC": "97000.5", "ETH": "0.000012345678901234"}}})
    assert await i.run_once() == {"cg": True}
    got = await entries(i)
    assert [e["type"] for e in got] == ["price", "price", "source_status"]
    assert got[1]["price"] == "0.000012345678901234"  # exact, never through float
    assert got[2] == {"type": "source_status", "ts": str(START_MS), "venue": "fakex", "source": "cg", "ok": "true"}
    await i.aclose()
    assert i.runs["cg"].source.closed  # type: ignore[attr-defined]  # the host closes what it built


@pytest.mark.parametrize(
    "behaviour, error",
    [
        ("fail", "HTTP 503 on GET /prices?asset=BTC&signature=***: upstream down"),
        ("bug", "ValueError: unexpected payload shape"),
        ("hang", "fetch did not finish within timeout_s = 0.05s"),
    ],
)
async def test_a_failed_fetch_publishes_no_value_only_a_failed_status(backend: Any, behaviour: str, error: str) -> None:
    i = ingest(
        backend, {"cg": {"kind": "fake-prices", "prices": {"BTC": "1"}, "behaviour": behaviour, "timeout_s": 0.05}}
    )
    assert await i.run_once() == {"cg": False}
    (status,) = await entries(i)
    assert (status["type"], status["ok"], status["error"]) == ("source_status", "false", error)
    assert i.runs["cg"].failures == 1 and i.runs["cg"].last_error == error


async def test_missing_values_are_reported_and_alerted_once_per_period(backend: Any) -> None:
    i = ingest(backend, {"cg": {"kind": "fake-prices", "prices": {"BTC": "1"}, "missing": ["ARB"]}})
    await i.run_once()
    await i.run_once()
    got = await entries(i)
    assert [e["type"] for e in got] == ["price", "source_status"] * 2
    assert got[1]["ok"] == "true" and got[1]["error"] == "ARB missing from the answer"
    (alert,) = await entries(i, "alerts")
    assert (alert["code"], alert["severity"], alert["source"]) == ("source_incomplete", "warning", "cg")
    assert "ARB missing" in alert["message"] and "never as 0" in alert["message"]


async def test_redis_down_keeps_only_the_newest_attempt_and_writes_it_when_back(real_backend: Any) -> None:
    i = ingest(real_backend, {"cg": {"kind": "fake-prices", "prices": {"BTC": "1"}, "missing": ["ARB"]}})
    clock: ManualClock = i.clock  # type: ignore[assignment]
    good = i.redis
    i.redis = good.__class__.from_url("redis://127.0.0.1:1/0", decode_responses=True)
    assert await i.run_once() == {"cg": False}  # fetched, but not written
    clock.advance(1000)
    assert await i.run_once() == {"cg": False}
    assert i.runs["cg"].superseded == 1
    await i.redis.aclose()
    i.redis = good
    assert await i.flush(i.runs["cg"])
    got = await entries(i)
    assert [e["ts"] for e in got] == [str(START_MS + 1000)] * 2  # the newest round only
    (alert,) = await entries(i, "alerts")  # raised while Redis was down: written once it is back
    assert alert["code"] == "source_incomplete" and "ARB missing" in alert["message"]


async def test_run_keeps_each_source_on_its_interval_until_stopped(fake_backend: Any) -> None:
    i = ingest(
        fake_backend,
        {
            "fast": {"kind": "fake-prices", "prices": {"BTC": "1"}, "interval_s": 0.1},
            "slow": {"kind": "fake-prices", "prices": {"ETH": "1"}, "interval_s": 10},
        },
    )
    task = asyncio.create_task(i.run())
    await asyncio.sleep(0.35)
    i.request_stop()
    await asyncio.wait_for(task, 2)
    assert 3 <= i.runs["fast"].attempts <= 5 and i.runs["slow"].attempts == 1


async def test_the_command_runs_one_round_and_says_which_source_failed(
    real_backend: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_config(tmp_path, real_backend.prefix, {"cg": {"kind": "fake-prices", "prices": {"BTC": "2"}}})
    assert await asyncio.to_thread(main, ["ingest", "--config", str(good), "--once"]) == 0
    bad = write_config(
        tmp_path,
        real_backend.prefix,
        {"cg": {"kind": "fake-prices", "behaviour": "fail"}, "ok": {"kind": "fake-prices", "prices": {"BTC": "2"}}},
    )
    assert await asyncio.to_thread(main, ["ingest", "--config", str(bad), "--once"]) == 1
    err = capsys.readouterr().err
    assert "source cg failed: HTTP 503" in err and "signature=***" in err and "abab" not in err
    missing = write_config(tmp_path, real_backend.prefix, {"cg": {"kind": "fake-prices", "token_env": "NO_SUCH_VAR_X"}})
    assert await asyncio.to_thread(main, ["ingest", "--config", str(missing), "--once"]) == 2
    assert "NO_SUCH_VAR_X is not set" in capsys.readouterr().err


def test_credentials_in_urls_are_masked() -> None:
    text = "GET /fapi/v3/account?timestamp=1&signature=deadbeef&x_cg_demo_api_key=k1 api_key=zz token=tt"
    assert redact(text) == "GET /fapi/v3/account?timestamp=1&signature=***&x_cg_demo_api_key=*** api_key=*** token=***"


# --- host budgets -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_budget_spends_weights_and_refuses_what_would_outlast_the_deadline() -> None:
    clock = Clock()
    limiter = HostLimiter("api", 10, 60.0, clock)
    await limiter.acquire(4, deadline=clock.now)
    await limiter.acquire(6, deadline=clock.now)
    assert limiter.spent() == 10
    with pytest.raises(RateLimited, match="weight budget 10/60s spent; free in 60.0s") as exc:
        await limiter.acquire(1, deadline=clock.now + 59)
    assert exc.value.until == clock.now + 60
    clock.now += 60  # the first two leave the window
    await limiter.acquire(10, deadline=clock.now)
    with pytest.raises(ValueError, match="exceeds the whole budget"):
        await limiter.acquire(11, deadline=clock.now + 1000)
    limiter.limit(20)
    assert limiter.budget == 10  # the lowest declared budget stands
    limiter.observe_used(15)  # someone else on this IP spent more
    assert limiter.spent() == 15


async def test_a_wait_within_the_deadline_is_waited_for() -> None:
    limiter = HostLimiter("api", 2, window_s=0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(4):
        await limiter.acquire(1, deadline=loop.time() + 1)
    assert loop.time() - start >= 0.05 and limiter.waited_s > 0


def test_429_blocks_the_host_for_retry_after_and_418_backs_off_doubling() -> None:
    clock = Clock()
    limiter = HostLimiter("api", 100, 60.0, clock)
    assert limiter.too_many_requests(7) == 7 and limiter.blocked_until == clock.now + 7
    assert limiter.too_many_requests(None) == 60
    assert [limiter.banned(None) for _ in range(3)] == [120, 240, 480]
    assert limiter.banned(5000) == 5000  # a longer Retry-After wins
    assert [limiter.banned(None) for _ in range(2)] == [1920, 3600]  # capped
    limiter.succeeded()
    assert limiter.banned(None) == 120


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": "12"})) == 12
    assert 0 <= retry_after_s(httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0  # type: ignore[operator]
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert retry_after_s(httpx.Response(429)) is None


async def test_the_pool_blocks_a_host_after_429_and_sends_nothing_until_it_frees() -> None:
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        if len(sent) == 1:
            return httpx.Response(429, headers={"Retry-After": "30"}, json={"code": -1003, "msg": "Too many requests"})
        return httpx.Response(200, json={})

    clock = Clock()
    pool = HttpPool(transport=httpx.MockTransport(answer), clock=clock)
    pool.limit("https://api.example/x", 100)
    with pytest.raises(RateLimited, match="HTTP 429 .* waits 30s"):
        await pool.request("GET", "https://api.example/x", deadline=clock.now + 5)
    with pytest.raises(RateLimited, match="HTTP 429 \\(rate limited\\), retry after 30s"):
        await pool.request("GET", "https://api.example/x", deadline=clock.now + 5)
    assert len(sent) == 1  # the second was never sent
    clock.now += 31
    assert (await pool.request("GET", "https://api.example/x", deadline=clock.now + 5)).status_code == 200
    await pool.aclose()


async def test_the_pool_turns_timeouts_and_transport_errors_into_source_errors() -> None:
    from navstream.sources import SourceError

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    pool = HttpPool(transport=httpx.MockTransport(broken))
    loop = asyncio.get_running_loop()
    with pytest.raises(SourceError, match="ConnectError: connection refused"):
        await pool.request("GET", "https://h.example/p", deadline=loop.time() + 1)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1)
        return httpx.Response(200)

    pool = HttpPool(transport=httpx.MockTransport(slow))
    with pytest.raises(SourceError, match="timed out"):
        await pool.request("GET", "https://h.example/p", deadline=loop.time() + 0.05)
    with pytest.raises(ValueError, match="not an http"):
        await pool.request("GET", "ftp://h.example/p", deadline=loop.time() + 1)


async def test_the_pool_sends_a_request_body_as_given_and_never_quotes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A signed POST (Kraken's private calls: a form with a nonce) goes out byte for byte with
    the weight taken from the host's budget; no error or log line made from it quotes the body."""
    from navstream.sources import SourceError

    form = "nonce=1796579343880&docalcs=true&otp=s3cr%C3%A9t-ÿ-body-token"
    pool = HttpPool(timeout_s=5)
    loop = asyncio.get_running_loop()
    caplog.set_level("DEBUG")
    with HttpStub() as stub:
        stub.add("/0/private/BalanceEx", Canned(json={"error": [], "result": {}}), Canned(500, body="venue down"))
        stub.add("/0/private/OpenPositions", Canned(429, headers={"Retry-After": "30"}, body="slow down"))
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        url = f"{stub.url}/0/private/BalanceEx"
        limiter = pool.limit(url, 60)
        answer = await pool.request("POST", url, deadline=loop.time() + 5, weight=3, headers=headers, content=form)
        assert answer.json() == {"error": [], "result": {}} and limiter.spent() == 3
        (sent,) = stub.to("/0/private/BalanceEx")
        assert (sent.method, sent.body) == ("POST", form.encode())
        assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
        assert sent.form["otp"] == ["s3crét-ÿ-body-token"] and sent.headers["content-length"] == str(len(form.encode()))
        raw = form.encode() + b"\x00\xff"  # bytes go as they are
        failed = await pool.request("POST", url, deadline=loop.time() + 5, content=raw, what="kraken balance")
        assert stub.to("/0/private/BalanceEx")[1].body == raw
        errors = []
        with pytest.raises(SourceError) as exc:
            check(failed, "kraken balance")
        errors.append(str(exc.value))
        with pytest.raises(RateLimited) as limited:
            await pool.request("POST", f"{stub.url}/0/private/OpenPositions", deadline=loop.time() + 5, content=form)
        errors.append(str(limited.value))
    await pool.aclose()
    pool = HttpPool(timeout_s=5)  # the host is blocked in the first one
    with pytest.raises(SourceError) as exc:  # the stub is gone: a transport error
        await pool.request("PUT", f"{stub.url}/gone", deadline=loop.time() + 5, content=form)
    errors.append(str(exc.value))
    await pool.aclose()
    assert "venue down" in errors[0] and "slow down" in errors[1] and "ConnectError" in errors[2], errors
    logged = [record.getMessage() + repr(record.__dict__) for record in caplog.records]
    for text in errors + logged:
        assert "body-token" not in text and "nonce" not in text, text


def test_the_cache_returns_a_quote_only_while_fresh() -> None:
    clock = Clock()
    cache = PriceCache(clock)
    p = Price(ts=START_MS, base="BTC", quote="USD", price=Decimal("97000"), source="cg")
    cache.put([p])
    assert cache.get("cg", "BTC", "USD", ttl_s=10) is p
    clock.now += 10
    assert cache.get("cg", "BTC", "USD", ttl_s=10) is None
    assert cache.get("cg", "BTC", "USD", ttl_s=0) is None
    assert (cache.hits, cache.misses) == (1, 2)
