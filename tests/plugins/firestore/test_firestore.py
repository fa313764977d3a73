"""The Firestore sink (issue 7), against a real Firestore emulator started by these tests.

The emulator: ``FIRESTORE_EMULATOR_HOST`` if it is set (``.ci/run`` starts one), else Google's
(``gcloud emulators firestore start``, package google-cloud-cli-firestore-emulator), else the
npm package ``@firestore-emulator/server`` kept in tools/firestore-emulator (installed with
``npm ci`` when its node_modules is missing). One per session, each test under a collection
of its own; the test that stops Firestore mid-run stops a second, private instance. Without
any emulator the integration tests are skipped locally and fail in CI (``CI=true``).

Redis: a real one when it answers (``NAVSTREAM_REQUIRE_REDIS=1`` makes its absence fail), else
fakeredis. Time for the heartbeats, the budget's day and the history moves with a
``ManualClock``; the per-document interval and retries are real time (Firestore's limits are).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support import REAL_REDIS, REDIS_URL, REQUIRE_REDIS, ROOT, START_MS, Backend, run_step

import navstream.plugins.firestore as firestore_plugin
import navstream.plugins.nav as nav_plugin
from navstream import ManualClock
from navstream.cli import main
from navstream.config import ConfigError
from navstream.loop.consumer import Consumer, StartupError
from navstream.plugins.firestore import sink as sink_module
from navstream.plugins.firestore.config import FirestoreConfig, TargetError, resolve_target
from navstream.plugins.firestore.coordination import LEADER, writes_key
from navstream.plugins.firestore.documents import (
    Doc,
    history_doc_id,
    history_document,
    moved,
    nav_doc_id,
    risk_doc_id,
)
from navstream.plugins.firestore.sink import Sink, routine_allowance, utc_day
from navstream.plugins.firestore.sync import shared_documents
from navstream.plugins.nav.state import read_latest
from navstream.plugins.nav.valuation import Snapshot
from navstream.plugins.risk.state import TRADING, encode_record
from navstream.plugins.risk.trading import TradingRecord

NODE_EMULATOR = ROOT / "tools" / "firestore-emulator"
PROJECT = "demo-navstream"
IN_CI = os.environ.get("CI") == "true"
T0 = START_MS - 1_000
DAY, FRACTION = utc_day(START_MS)


# --- the emulator -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Emulator:
    """One Firestore emulator process (its own process group: gcloud's Java child dies with
    it), or one that someone else runs (``external``: never stopped here)."""

    def __init__(self, kind: str, host: str, log: Path | None = None) -> None:
        self.kind, self.host, self.log = kind, host, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.host.rpartition(":")[2])

    def start(self, timeout_s: float = 90.0) -> None:
        assert self.kind in ("gcloud", "node") and self.log is not None
        if self.kind == "gcloud":
            argv = ["gcloud", "emulators", "firestore", "start", f"--host-port={self.host}", "--quiet"]
        else:
            argv = ["node", str(NODE_EMULATOR / "serve.js"), str(self.port)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} emulator exited with {self.proc.returncode}: "
                    f"{self.log.read_text(errors='replace')[-2000:]}"
                )
            if self._answers():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.kind} emulator did not answer on {self.host} within {timeout_s:g}s")

    def _answers(self) -> bool:
        if self.kind == "gcloud":  # its HTTP side says Ok once the whole server is up
            try:
                with urllib.request.urlopen(f"http://{self.host}/", timeout=1) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self, crash: bool = False) -> None:
        """Stop the whole process group: politely, or (``crash``) with SIGKILL at once."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        signals = ((signal.SIGKILL, 10),) if crash else ((signal.SIGTERM, 10), (signal.SIGKILL, 10))
        for sig, wait_s in signals:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        deadline = time.monotonic() + 10  # the group's last member (gcloud's Java) gone too
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies, dead but not yet reaped by
    PID 1, do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _node_ready() -> str | None:
    """Why the npm emulator cannot run, or None (installing it with `npm ci` if needed)."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_EMULATOR / "node_modules" / "@firestore-emulator" / "server").is_dir():
        if shutil.which("npm") is None:
            return "npm is not installed"
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_EMULATOR, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            return f"`npm ci` in {NODE_EMULATOR} failed: {done.stderr[-1000:]}"
    return None


def start_emulator(log_dir: Path) -> Emulator:
    """Google's emulator, else the npm one; RuntimeError with every reason if neither starts.
    ``NAVSTREAM_TEST_EMULATOR=node`` (or ``gcloud``) allows only that one."""
    problems = []
    only = os.environ.get("NAVSTREAM_TEST_EMULATOR", "")
    if only == "node":
        problems.append("gcloud not tried (NAVSTREAM_TEST_EMULATOR=node)")
    elif shutil.which("gcloud") is not None:
        emulator = Emulator("gcloud", f"127.0.0.1:{_free_port()}", log_dir / f"gcloud-{uuid.uuid4().hex[:6]}.log")
        try:
            emulator.start()
            return emulator
        except RuntimeError as exc:
            problems.append(f"gcloud: {exc}")
    else:
        problems.append("gcloud is not installed")
    why = "not tried (NAVSTREAM_TEST_EMULATOR=gcloud)" if only == "gcloud" else _node_ready()
    if why is None:
        emulator = Emulator("node", f"127.0.0.1:{_free_port()}", log_dir / f"node-{uuid.uuid4().hex[:6]}.log")
        try:
            emulator.start(timeout_s=30)
            return emulator
        except RuntimeError as exc:
            problems.append(f"@firestore-emulator/server: {exc}")
    else:
        problems.append(f"@firestore-emulator/server: {why}")
    raise RuntimeError("; ".join(problems))


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    pytest.importorskip("google.cloud.firestore", reason="google-cloud-firestore is in the [test] extra")
    host = os.environ.get("FIRESTORE_EMULATOR_HOST", "").strip()
    if host:
        yield Emulator("external", host)
        return
    try:
        started = start_emulator(tmp_path_factory.mktemp("firestore-emulator"))
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(f"no Firestore emulator could be started (CI=true): {exc}")
        pytest.skip(f"no Firestore emulator: {exc} (docs/firestore.md says how to install one)")
    try:
        yield started
    finally:
        started.stop()


# --- Redis, apps, readers ---------------------------------------------------------------------


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    """Overrides conftest's: one run per test, on the real Redis when there is one (these tests
    start emulators and take seconds; once is enough), else fakeredis."""
    if not REAL_REDIS and REQUIRE_REDIS:
        pytest.fail(f"NAVSTREAM_REQUIRE_REDIS=1 but no Redis answers at {REDIS_URL}")
    b = Backend("real" if REAL_REDIS else "fake")
    yield b
    await b.cleanup()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAVSTREAM_ENV", raising=False)
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(sink_module, "RETRY_MAX_S", 0.5)  # recovery within the test's patience


def nav_section() -> dict[str, Any]:
    return {
        "max_age_s": 600,
        "publish_every_s": 600,
        "alert_every_s": 300,
        "pegs": {"USDT": "1"},
        "routes": {"BTC": "BTC/USDT"},
        "accounts": [
            {"venue": "binance", "account": "main", "kind": "futures"},
            {"venue": "okx", "account": "empty", "kind": "spot"},
        ],
    }


def fs_section(root: str, **over: Any) -> dict[str, Any]:
    return {"enabled": True, "project": PROJECT, "env": "dev", "root_collection": root, "min_interval_s": 0.01, **over}


def balance(asset: str, amount: str, ts: int, account: str = "main", venue: str = "binance") -> dict[str, str]:
    return {"type": "balance", "venue": venue, "account": account, "asset": asset, "balance": amount, "ts": str(ts)}


def price(value: str, ts: int) -> dict[str, str]:
    return {"type": "price", "base": "BTC", "quote": "USDT", "price": value, "source": "binance-spot", "ts": str(ts)}


def report(ts: int) -> dict[str, str]:
    """binance's venue-wide source_status, from the source of its prices: it vouches for the
    account and the prices (without one both are stale: silence is not health)."""
    return {"type": "source_status", "venue": "binance", "source": "binance-spot", "ok": "true", "ts": str(ts)}


def desk(ts: int = T0, btc: str = "0.5") -> list[dict[str, str]]:
    """binance/main: 1000.5 USDT and 0.5 BTC at 97000.5: 49500.75 USD, binance reporting."""
    return [balance("USDT", "1000.5", ts), balance("BTC", btc, ts), price("97000.5", ts), report(ts)]


class Harness:
    """Apps with the nav and firestore plugins on one Redis, shut down at the end of the test."""

    def __init__(self, make_app: Any) -> None:
        self.make_app = make_app
        self.consumers: list[Consumer] = []
        self.root = f"t{uuid.uuid4().hex[:12]}"

    def app(
        self, fs: dict[str, Any] | None = None, *, clock: Any = None, name: str | None = None, nav: bool = True
    ) -> Any:
        plugins: list[tuple[str, object]] = [("nav", nav_plugin.NavPlugin)] if nav else []
        extra = {"firestore": fs_section(self.root, **(fs or {}))}
        if nav:
            extra["nav"] = nav_section()
        return self.make_app(
            plugins=[*plugins, ("firestore", firestore_plugin.FirestorePlugin)],
            extra=extra,
            clock=clock or ManualClock(START_MS),
            name=name,
        )

    async def start(self, fs: dict[str, Any] | None = None, **kw: Any) -> tuple[Any, Consumer]:
        app = self.app(fs, **kw)
        consumer = Consumer(app)
        await consumer.setup()
        self.consumers.append(consumer)
        return app, consumer

    async def stop(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
            await consumer.shutdown()

    async def close(self) -> None:
        for consumer in list(self.consumers):
            await self.stop(consumer)


@pytest.fixture
async def harness(make_app: Any) -> AsyncIterator[Harness]:
    h = Harness(make_app)
    yield h
    await h.close()


class Reader:
    """Reads what the emulator holds, with a client of its own."""

    def __init__(self, host: str) -> None:
        from google.cloud import firestore

        with _env(FIRESTORE_EMULATOR_HOST=host):
            self.client = firestore.AsyncClient(project=PROJECT)

    async def docs(self, path: str) -> dict[str, dict[str, Any]]:
        return {d.id: d.to_dict() async for d in self.client.collection(path).stream(retry=None, timeout=10)}

    async def doc(self, path: str) -> dict[str, Any] | None:
        snap = await self.client.document(path).get(retry=None, timeout=10)
        return snap.to_dict() if snap.exists else None

    async def aclose(self) -> None:
        from navstream.plugins.firestore.client import close_client

        await close_client(self.client)


@contextmanager
def _env(**values: str) -> Iterator[None]:
    held = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in held.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
async def fs(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Reader]:
    """The shared emulator, in this test's environment, and a reader of it."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
    reader = Reader(emulator.host)
    yield reader
    await reader.aclose()


def block_google(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``from google.cloud import firestore`` fail, as without the package."""
    monkeypatch.setitem(sys.modules, "google.cloud", None)
    monkeypatch.setitem(sys.modules, "google.cloud.firestore", None)


def firestore_plugin_of(app: Any) -> firestore_plugin.FirestorePlugin:
    plugin = app.plugin("firestore")
    assert isinstance(plugin, firestore_plugin.FirestorePlugin)
    return plugin


def sink_of(app: Any) -> Sink:
    run = firestore_plugin_of(app).run
    assert run is not None, "the firestore sink is not running"
    return run.sink


async def settle(*apps: Any) -> None:
    """Until each sink has written all it may (what is due now, and what waits for its
    interval), or is failing."""
    deadline = time.monotonic() + 30
    for app in apps:
        sink = sink_of(app)
        await asyncio.wait_for(sink.settle(), 30)
        while sink.writable() and not sink.stats.failing_since_ms:
            assert time.monotonic() < deadline, f"still waiting: {sorted(sink.pending)}"
            await asyncio.sleep(0.02)
            await asyncio.wait_for(sink.settle(), 30)


def hb_key(app: Any) -> str:
    return app.keys.heartbeat(app.consumer_name)


async def alerts(app: Any, code: str) -> list[dict[str, str]]:
    return [f for _, f in await app.redis.xrange(app.keys.alerts) if f["code"] == code]


def spy_commits(monkeypatch: pytest.MonkeyPatch, sink: Sink) -> list[list[str]]:
    """Every commit's document paths, as the store is asked for them."""
    seen: list[list[str]] = []
    real = sink.store.commit

    async def commit(docs: Any) -> None:
        seen.append([d.path for d in docs])
        await real(docs)

    monkeypatch.setattr(sink.store, "commit", commit)
    return seen


# --- config and refusals (no emulator) ----------------------------------------------------------


def _decode(**section: Any) -> FirestoreConfig:
    return msgspec.convert(section, FirestoreConfig)


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ({"enabled": True}, "project` is required"),
        ({"enabled": True, "project": "p", "env": "prod"}, "allow_prod"),
        ({"env": "Prod"}, "a-z 0-9"),
        ({"env": "dev/x"}, "a-z 0-9"),
        ({"root_collection": "a/b"}, "root_collection"),
        ({"root_collection": "__x__"}, "root_collection"),
        ({"history_every_s": 10.0}, "history_every_s"),
        ({"min_interval_s": 0.0}, ">= 0.01"),
        ({"max_writes_per_day": 10}, ">= 100"),
        ({"enabled": True, "project": "p", "env": "dev", "colection": "x"}, "unknown field `colection`"),
    ],
)
def test_config_refuses(section: dict[str, Any], error: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=error):
        _decode(**section)


def test_defaults_are_off_and_prod_needs_allow_prod() -> None:
    cfg = FirestoreConfig()
    assert not cfg.enabled and cfg.env == "" and not cfg.allow_prod and not cfg.dry_run
    # a day of heartbeats from three consumers spends a small share of the free budget
    assert 3 * 86_400 / cfg.heartbeat_every_s < 0.05 * cfg.max_writes_per_day
    assert _decode(enabled=True, project="p", env="prod", allow_prod=True).env == "prod"


def test_the_namespace_has_no_default_and_no_override_to_prod() -> None:
    cfg = _decode(enabled=True, project="p")
    with pytest.raises(TargetError, match="no Firestore namespace"):
        resolve_target(cfg, {})
    assert resolve_target(cfg, {"NAVSTREAM_ENV": "staging"}).base == "navstream/staging"
    with pytest.raises(TargetError, match="allow_prod"):
        resolve_target(cfg, {"NAVSTREAM_ENV": "prod"})
    with pytest.raises(TargetError, match="must be given once, or both must agree"):
        resolve_target(_decode(enabled=True, project="p", env="dev"), {"NAVSTREAM_ENV": "prod"})
    with pytest.raises(TargetError, match="a-z 0-9"):
        resolve_target(cfg, {"NAVSTREAM_ENV": "Prod!"})
    allowed = _decode(enabled=True, project="p", allow_prod=True)
    assert resolve_target(allowed, {"NAVSTREAM_ENV": "prod"}).path("nav/total") == "navstream/prod/nav/total"
    # a preview writes nothing: it may show prod's paths
    assert resolve_target(cfg, {"NAVSTREAM_ENV": "prod"}, writing=False).env == "prod"


async def test_disabled_does_nothing_and_imports_no_google(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    block_google(monkeypatch)
    app, consumer = await harness.start({"enabled": False})
    await run_step(app, consumer, *desk())
    assert firestore_plugin_of(app).run is None
    beat = await app.redis.hgetall(hb_key(app))
    assert not any(k.startswith("firestore.") for k in beat) and beat["health"] == "ok"
    assert await app.redis.get(app.keys.state(LEADER)) is None


@pytest.mark.parametrize(
    ("section", "environ", "error"),
    [
        ({"env": ""}, {}, "TargetError: no Firestore namespace: set \\[firestore\\] env or NAVSTREAM_ENV"),
        ({"env": ""}, {"NAVSTREAM_ENV": "prod"}, "refusing to write to env 'prod' without `allow_prod = true`"),
        ({"env": "staging"}, {"NAVSTREAM_ENV": "prod"}, "must be given once, or both must agree"),
    ],
)
async def test_startup_refuses_without_a_safe_namespace(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, section: dict[str, Any], environ: dict[str, str], error: str
) -> None:
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(StartupError, match=f"plugin 'firestore' failed to start: .*{error}"):
        await harness.start(section)


async def test_prod_in_the_config_file_without_allow_prod_is_a_config_error(harness: Harness) -> None:
    with pytest.raises(ConfigError, match=r"\[firestore\].*allow_prod"):
        harness.app({"env": "prod"})


async def test_startup_refuses_without_the_package(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    block_google(monkeypatch)
    with pytest.raises(
        StartupError, match=r"google-cloud-firestore is not installed.*pip install 'navstream\[firestore\]'"
    ):
        await harness.start()


async def test_startup_refuses_without_credentials(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("google.cloud.firestore")
    from google.auth.compute_engine import _metadata

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no `gcloud auth application-default`
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)  # and not on Google Cloud
    with pytest.raises(StartupError, match="no Google credentials for Firestore.*GOOGLE_APPLICATION_CREDENTIALS"):
        await harness.start()
    # a key file that is not there is the same refusal, naming it
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "nope.json"))
    with pytest.raises(StartupError, match="nope.json"):
        await harness.start()


async def test_startup_refuses_an_unreachable_project(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("google.cloud.firestore")
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{_free_port()}")  # nobody listens
    with pytest.raises(StartupError, match=r"Firestore project 'demo-navstream' at t\w+/dev/ refused the first read"):
        await harness.start()


# --- documents and pacing rules (pure) --------------------------------------------------------


def test_document_ids() -> None:
    assert nav_doc_id("account:binance/main") == "account:binance|main"
    # names are escaped inside a scope id, so replacing its one raw "/" cannot collide
    assert nav_doc_id("account:a%2Fb/c") != nav_doc_id("account:a/b%2Fc")
    assert risk_doc_id("*") == "desk" and risk_doc_id("binance/main") == "account:binance|main"
    assert nav_doc_id("__x__") == "~__x__"
    # history ids are spread over the key range, not monotonic in time (no hotspot)
    ids = [history_doc_id("total", START_MS + i * 60_000) for i in range(20)]
    assert len({i[:2] for i in ids}) > 5 and sorted(ids) != ids


def test_nav_documents_carry_the_status_a_reader_takes_the_nav_for() -> None:
    """A NAV stored ok is written stale from its fresh_until on, whatever tick has not yet said
    so; the stored status is kept beside it, and the reason names the moment (not an age), so
    the document does not change, and is not rewritten, on every tick after."""
    horizon = START_MS + 60_000
    account = Snapshot(
        "account", Decimal("10.5"), "USD", "ok", T0, START_MS, "binance", "main", "futures", fresh_until=horizon
    )
    total = Snapshot(
        "total", Decimal("10.5"), "USD", "ok", T0, START_MS, accounts=["binance/main"], fresh_until=horizon
    )
    latest = {account.scope_id: account, "total": total}

    def docs(now: int) -> dict[str, Doc]:
        return {d.path: d for d in shared_documents(latest, {}, now)}

    before = docs(horizon - 1)
    assert {p: (d.data or {})["status"] for p, d in before.items()} == {
        "nav/account:binance|main": "ok",
        "nav/total": "ok",
    }
    after = docs(horizon)
    for path, doc in after.items():
        data = doc.data or {}
        assert (data["status"], data["stored_status"], data["fresh_until"]) == ("stale", "ok", horizon), path
        assert data["reasons"][0].startswith("an input passed its age limit at ")
        assert doc.sig != before[path].sig  # a significant change: written even near the budget
    assert {p: d.content for p, d in docs(horizon + 300_000).items()} == {p: d.content for p, d in after.items()}
    point = history_document(account, START_MS, horizon)
    assert (point.data or {})["status"] == "stale"
    stale = msgspec.structs.replace(account, status="partial")
    assert (shared_documents({stale.scope_id: stale}, {}, horizon)[0].data or {})["status"] == "partial"


def test_significant_moves() -> None:
    assert moved(Decimal("101.01"), Decimal("100"), 1.0)
    assert not moved(Decimal("100.99"), Decimal("100"), 1.0)
    assert moved(Decimal("-2"), Decimal("0"), 1.0) and not moved(Decimal("0"), Decimal("0"), 1.0)
    assert not moved(None, None, 1.0)


def test_routine_updates_are_paced_over_the_day() -> None:
    assert routine_allowance(20_000, 0.0) == pytest.approx(1_000)
    assert routine_allowance(20_000, 0.5) == pytest.approx(8_000)
    assert routine_allowance(20_000, 1.0) == pytest.approx(15_000)  # below the 80 % alert


class FakeStore:
    """Records commits; fails while ``failing`` is set."""

    dry_run = False

    def __init__(self) -> None:
        self.commits: list[list[Doc]] = []
        self.failing: Exception | None = None

    async def commit(self, docs: Any) -> None:
        if self.failing is not None:
            raise self.failing
        self.commits.append(list(docs))

    async def aclose(self) -> None:
        pass


def doc(
    path: str,
    content: str,
    *,
    sig: str = "ok",
    amount: str | None = "100",
    shared: bool = False,
    significance: Any = "changes",
) -> Doc:
    return Doc(
        path,
        {"v": content},
        "nav",
        significance,
        shared=shared,
        content=content,
        sig=sig,
        amount=None if amount is None else Decimal(amount),
    )


async def test_sink_coalesces_sheds_and_holds_back_by_budget() -> None:
    store = FakeStore()
    sink = Sink(
        _decode(enabled=True, project="p", env="dev", queue_size=10, max_writes_per_day=1000, min_interval_s=0.01),
        store,
        None,
        ManualClock(START_MS),
    )
    sink.start()
    try:
        for i in range(50):  # fifty versions of one document: the last one, once
            sink.offer(doc("nav/a", f"v{i}", amount=str(100 + i)))
        await sink.settle()
        assert [[d.data for d in c] for c in store.commits] == [[{"v": "v49"}]]
        assert sink.stats.coalesced == 49 and sink.stats.writes == 1
        sink.offer(doc("nav/a", "v49", amount="149"))  # what Firestore holds: nothing to write
        await sink.settle()
        assert len(store.commits) == 1

        # a full queue sheds new documents (counted), never an update of a waiting one
        store.failing = RuntimeError("down")
        for i in range(15):
            sink.offer(doc(f"nav/q{i}", "x"))
        sink.offer(doc("nav/q0", "y"))
        assert len(sink.pending) == 10 and sink.stats.shed == 5 and sink.pending["nav/q0"].content == "y"
        await sink.settle()
        codes = [code for code, _ in sink.problems(START_MS)]
        assert codes == ["failing", "queue_full"], codes
        store.failing = None
        sink._retry_at = 0.0
        await sink.settle()
        assert not sink.pending and sink.problems(START_MS) == []

        # past the routine allowance: only significant changes go out, the rest waits
        await asyncio.sleep(0.02)  # nav/a's min_interval_s since its last write
        sink.observe_used(DAY, 700)  # above routine_allowance(1000, FRACTION), below 80 %
        assert 700 > routine_allowance(1000, FRACTION)
        sink.offer(doc("nav/a", "small", amount="150"))  # 149 -> 150: under 1 %
        sink.offer(doc("nav/b", "new"))  # never written: significant
        await sink.settle()
        assert [d.path for d in store.commits[-1]] == ["nav/b"] and sink.stats.deferred == 1
        sink.offer(doc("nav/a", "status", sig="stale", amount="150"))
        await sink.settle()
        assert [d.data for d in store.commits[-1]] == [{"v": "status"}]
        await asyncio.sleep(0.02)
        sink.offer(doc("nav/a", "jump", sig="stale", amount="200"))
        sink.offer(doc("heartbeats/c", "hb", significance="always"))
        sink.offer(Doc("nav_history/x", {"v": 1}, "history", "never", shared=False, content="h"))
        await sink.settle()
        assert sorted(d.path for d in store.commits[-1]) == ["heartbeats/c", "nav/a"]
        assert list(sink.pending) == ["nav_history/x"]
        # a new UTC day: the budget is fresh, what waited goes out
        sink.clock.advance(86_400_000)  # type: ignore[attr-defined]
        await sink.settle()
        assert not sink.pending
    finally:
        await sink.close(1)


# --- against the emulator -----------------------------------------------------------------------


async def test_documents_land_under_the_env_namespace(harness: Harness, fs: Reader) -> None:
    app, consumer = await harness.start()
    await app.redis.hset(
        app.keys.state(TRADING),
        "*",
        encode_record(TradingRecord("reducing", "NAV 5% below its high-water mark", "drawdown", T0, "52000.5")),
    )
    await run_step(app, consumer, *desk())
    await consumer.tick()
    await settle(app)
    base = f"{harness.root}/dev"

    navs = await fs.docs(f"{base}/nav")
    main_doc = navs["account:binance|main"]
    assert isinstance(main_doc["nav"], str) and Decimal(main_doc["nav"]) == Decimal("49500.75")
    assert main_doc["nav_float"] == pytest.approx(49500.75)
    assert main_doc["status"] == "ok" and main_doc["as_of"] == T0 and main_doc["quote"] == "USD"
    assert main_doc["missing"] == [] and main_doc["stale_sources"] == []
    assert main_doc["written_by"] == app.consumer_name and main_doc["written_at"] is not None
    # okx/empty is configured but has no data at all: absent, not written as 0
    assert not any("okx" in name for name in navs), sorted(navs)
    assert {"total", "exchange", "venue:binance"} <= set(navs)
    # the total lacks okx/empty's data: written, with the status and the reason that say so
    assert navs["total"]["status"] == "failed" and navs["total"]["as_of"] == 0 and navs["total"]["age_ms"] is None
    assert any("okx/empty" in r for r in navs["total"]["reasons"]) and navs["exchange"]["status"] == "ok"

    risk = await fs.docs(f"{base}/risk")
    assert risk == {
        "desk": {
            **risk["desk"],
            "state": "reducing",
            "by": "drawdown",
            "since": T0,
            "high_water": "52000.5",
            "high_water_float": 52000.5,
            "scope": "desk",
        }
    }

    beat = await fs.doc(f"{base}/heartbeats/{app.consumer_name}")
    assert beat is not None and beat["status"] == "ok" and beat["consumer_status"] == "running"
    assert beat["sink"]["last_success_ms"] > 0 and beat["sink"]["leader"] is True
    assert beat["counters"]["processed"] == 4

    # another environment is another namespace; nothing else is touched
    other, other_consumer = await harness.start({"env": "staging"}, name="staging-1")
    await other_consumer.tick()
    await settle(other)
    assert set(await fs.docs(f"{harness.root}/staging/heartbeats")) == {"staging-1"}
    assert await fs.docs(f"{harness.root}/prod/nav") == {}


async def test_prod_with_allow_prod(harness: Harness, fs: Reader, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAVSTREAM_ENV", "prod")
    app, consumer = await harness.start({"env": "", "allow_prod": True})
    await run_step(app, consumer, *desk())
    await settle(app)
    assert "total" in await fs.docs(f"{harness.root}/prod/nav")


async def test_many_updates_of_one_document_make_one_write(
    harness: Harness, fs: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, consumer = await harness.start({"min_interval_s": 3600.0})  # after the first write, everything waits
    sink = sink_of(app)
    await run_step(app, consumer, *desk())
    await sink.settle()
    commits = spy_commits(monkeypatch, sink)
    for i in range(1, 11):
        await run_step(app, consumer, balance("USDT", f"{1000 + i}", T0 + i))
    await sink.settle()
    assert commits == []  # each scope changed 10 times; one version waits per document
    assert Decimal(sink.pending["nav/account:binance|main"].data["nav"]) == Decimal("49510.25")  # type: ignore[index]
    assert sink.stats.coalesced >= 9
    total = await fs.doc(f"{harness.root}/dev/nav/total")
    assert total is not None and Decimal(total["nav"]) == Decimal("49500.75")
    # at shutdown the latest version of each goes out at once, interval or not
    await harness.close()
    assert [len(c) for c in commits] == [len(commits[0])] and len(commits[0]) >= 4
    total = await fs.doc(f"{harness.root}/dev/nav/total")
    assert total is not None and Decimal(total["nav"]) == Decimal("49510.25")


async def test_more_than_500_documents_go_in_batches_of_500(
    harness: Harness, fs: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = await harness.start(nav=False)
    sink = sink_of(app)
    commits = spy_commits(monkeypatch, sink)
    for i in range(1201):
        sink.offer(Doc(f"heartbeats/bulk-{i:04d}", {"i": i}, "heartbeat", "always", shared=False, content=str(i)))
    await settle(app)
    assert [len(c) for c in commits] == [500, 500, 201]
    stored = await fs.docs(f"{harness.root}/dev/heartbeats")
    assert len([k for k in stored if k.startswith("bulk-")]) == 1201
    # every committed operation is counted in the group's budget, one INCRBY per commit
    assert int(await app.redis.get(app.keys.state(writes_key(DAY)))) == 1 + 1201


async def test_one_write_per_document_per_min_interval(
    harness: Harness, fs: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = await harness.start({"min_interval_s": 0.5}, nav=False)
    sink = sink_of(app)
    commits = spy_commits(monkeypatch, sink)
    path = f"{harness.root}/dev/nav/x"
    sink.offer(doc("nav/x", "1"))
    await sink.settle()
    first = time.monotonic()
    sink.offer(doc("nav/x", "2"))
    sink.offer(doc("nav/y", "1"))  # another document is not held up
    await sink.settle()
    assert commits == [["nav/x"], ["nav/y"]]
    assert (await fs.doc(path) or {})["v"] == "1"
    while len(commits) < 3:
        await asyncio.sleep(0.05)
        assert time.monotonic() - first < 5
    assert time.monotonic() - first >= 0.45
    assert commits[2] == ["nav/x"] and (await fs.doc(path) or {})["v"] == "2"


async def test_heartbeats(harness: Harness, fs: Reader, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock(START_MS)
    app, consumer = await harness.start({"heartbeat_every_s": 60.0}, clock=clock, nav=False)
    sink = sink_of(app)
    path = f"{harness.root}/dev/heartbeats/{app.consumer_name}"
    # the startup probe wrote the first one, before anything was confirmed
    assert sink.stats.writes == 1
    await consumer.tick()
    await settle(app)
    beat = await fs.doc(path)
    assert beat is not None and beat["status"] == "ok" and beat["reason"] == "" and beat["ts"] == START_MS
    assert beat["sink"]["writes"] == 1 and "lag" in beat and beat["group"] == "g"
    commits = spy_commits(monkeypatch, sink)
    for _ in range(3):  # not due again before 60 s
        clock.advance(10_000)
        await consumer.tick()
    await settle(app)
    assert commits == []
    clock.advance(31_000)
    await consumer.tick()
    await settle(app)
    assert commits == [[f"heartbeats/{app.consumer_name}"]]
    assert (await fs.doc(path) or {})["ts"] == START_MS + 61_000
    redis_beat = await app.redis.hgetall(hb_key(app))
    assert redis_beat["firestore.status"] == "ok" and redis_beat["health"] == "ok"
    assert int(redis_beat["firestore.writes"]) >= 2 and redis_beat["firestore.leader"] == "1"
    # a stop says so in the document
    await harness.stop(consumer)
    final = await fs.doc(path)
    assert final is not None and final["consumer_status"] == "stopped"


async def test_one_leader_writes_the_shared_documents(harness: Harness, fs: Reader) -> None:
    clock = ManualClock(START_MS)
    a, ca = await harness.start(name="a", clock=clock)
    b, cb = await harness.start(name="b", clock=clock)
    await run_step(a, ca, *desk())
    await cb.tick()
    await settle(a, b)
    assert await a.redis.get(a.keys.state(LEADER)) == "a"
    assert sink_of(a).leader and not sink_of(b).leader
    navs = await fs.docs(f"{harness.root}/dev/nav")
    assert navs and {d["written_by"] for d in navs.values()} == {"a"}
    assert set(await fs.docs(f"{harness.root}/dev/heartbeats")) == {"a", "b"}
    assert not any(p.startswith(("nav/", "risk/")) for p in sink_of(b).pending)

    # the leader stops: it hands the lease over, and the other one writes from its next tick
    await harness.stop(ca)
    assert await b.redis.get(b.keys.state(LEADER)) is None
    await run_step(b, cb, balance("USDT", "2000.5", T0 + 5))
    await settle(b)
    assert sink_of(b).leader
    main_doc = await fs.doc(f"{harness.root}/dev/nav/account:binance|main")
    assert main_doc is not None and main_doc["written_by"] == "b" and Decimal(main_doc["nav"]) == Decimal("50500.75")

    # a lease that lapses (its holder stopped renewing) is taken over too
    await b.redis.set(b.keys.state(LEADER), "gone", px=50)
    await cb.tick()
    assert not sink_of(b).leader
    await asyncio.sleep(0.1)
    await cb.tick()
    assert sink_of(b).leader


async def test_the_sink_writes_a_nav_past_its_fresh_until_as_stale_without_a_nav_tick(
    harness: Harness, fs: Reader
) -> None:
    """The NAV is valued by one consumer, then nobody ticks the nav plugin; the sink's own tick
    writes the latest NAV as a reader must take it: stale from its fresh_until on."""
    clock = ManualClock(START_MS)
    valuer = harness.make_app(
        plugins=[("nav", nav_plugin.NavPlugin)], extra={"nav": nav_section()}, clock=clock, name="v"
    )
    valuing = Consumer(valuer)
    await valuing.setup()
    await run_step(valuer, valuing, *desk())
    stored = (await read_latest(valuer))["account:binance/main"]
    assert stored.status == "ok" and stored.fresh_until == T0 + 600_000 + 1
    app, consumer = await harness.start(nav=False, clock=clock, name="sink")
    await consumer.tick()
    await settle(app)
    path = f"{harness.root}/dev/nav/account:binance|main"
    assert ((await fs.doc(path)) or {})["status"] == "ok"
    clock.advance(stored.fresh_until - clock.now_ms())
    await consumer.tick()  # only the sink ticks: the stored NAV still says ok
    await settle(app)
    written = await fs.doc(path) or {}
    assert (written["status"], written["stored_status"]) == ("stale", "ok")
    assert written["reasons"][0].startswith("an input passed its age limit")
    assert ((await fs.doc(f"{harness.root}/dev/nav/exchange")) or {})["status"] == "stale"  # an aggregate too
    assert (await read_latest(valuer))["account:binance/main"].status == "ok"
    await valuing.shutdown()


async def test_near_the_budget_only_significant_changes_are_written(
    harness: Harness, fs: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, consumer = await harness.start({"max_writes_per_day": 1000, "significant_move_pct": 1.0})
    sink = sink_of(app)
    await run_step(app, consumer, *desk())
    await settle(app)
    base = f"{harness.root}/dev/nav"
    await app.redis.incrby(app.keys.state(writes_key(DAY)), 850)  # other consumers spent most of it
    commits = spy_commits(monkeypatch, sink)

    await run_step(app, consumer, balance("USDT", "1100.5", T0 + 1))  # +100 USD: 0.2 %, routine
    await settle(app)
    assert not any(p.startswith("nav/") for c in commits for p in c)
    assert Decimal((await fs.doc(f"{base}/account:binance|main") or {})["nav"]) == Decimal("49500.75")
    assert sink.stats.deferred >= 1
    (low,) = await alerts(app, "firestore_budget_low")
    assert low["severity"] == "warning" and "only significant changes" in low["message"]
    beat = await app.redis.hgetall(hb_key(app))
    assert beat["firestore.status"] == "degraded" and "writes used today" in beat["firestore.reason"]

    await run_step(app, consumer, price("99000.5", T0 + 2))  # BTC +2 %: NAV +1.0 %... of 49600: moves
    await settle(app)
    main_doc = await fs.doc(f"{base}/account:binance|main")
    assert main_doc is not None and Decimal(main_doc["nav"]) == Decimal("50600.75")

    # the budget is spent: still written (significant changes, heartbeats), alerted as critical
    await app.redis.incrby(app.keys.state(writes_key(DAY)), 200)
    await run_step(app, consumer, balance("BTC", "0.25", T0 + 3))  # a halving: significant
    await settle(app)
    assert Decimal((await fs.doc(f"{base}/account:binance|main") or {})["nav"]) == Decimal("25850.625")
    assert [a["severity"] for a in await alerts(app, "firestore_budget_low")] == ["warning", "critical"]


async def test_degraded_while_firestore_is_down_and_recovery(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    """A private emulator (not the shared one) is stopped mid-run, then started again."""
    if emulator.kind == "external":
        private = start_emulator(tmp_path)
    else:  # the same kind as the shared one
        private = Emulator(emulator.kind, f"127.0.0.1:{_free_port()}", tmp_path / "private.log")
        private.start()
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", private.host)
    reader = Reader(private.host)
    try:
        app, consumer = await harness.start()
        sink = sink_of(app)
        await run_step(app, consumer, *desk())
        await settle(app)
        assert sink.stats.failures == 0

        private.stop(crash=True)
        await run_step(app, consumer, balance("USDT", "2000.5", T0 + 1))
        await settle(app)
        await consumer.tick()
        assert sink.stats.failures >= 1 and sink.stats.failing_since_ms
        (failed,) = await alerts(app, "firestore_write_failed")
        assert failed["severity"] == "critical" and "failing since" in failed["message"]
        beat = await app.redis.hgetall(hb_key(app))
        assert beat["firestore.status"] == "degraded" and beat["health"] == "degraded"
        assert "writes failing since" in beat["firestore.reason"] and beat["firestore.last_failure"]
        assert "firestore: writes failing" in beat["health_reasons"]
        # the loop did not wait for Firestore: ticks and batches go on
        await run_step(app, consumer, balance("USDT", "2100.5", T0 + 2))
        await consumer.tick()
        assert len(await alerts(app, "firestore_write_failed")) == 1  # reminded every alert_every_s, not per tick

        private.start()
        deadline = time.monotonic() + 30
        while sink.stats.failing_since_ms and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await consumer.tick()
        assert not sink.stats.failing_since_ms, sink.stats.last_failure
        await consumer.tick()
        await settle(app)
        await consumer.tick()
        await settle(app)
        assert len(await alerts(app, "firestore_recovered")) == 1
        beat = await app.redis.hgetall(hb_key(app))
        assert beat["firestore.status"] == "ok" and beat["health"] == "ok"
        main_doc = await reader.doc(f"{harness.root}/dev/nav/account:binance|main")
        assert main_doc is not None and Decimal(main_doc["nav"]) == Decimal("50600.75")
        hb_doc = await reader.doc(f"{harness.root}/dev/heartbeats/{app.consumer_name}")
        assert hb_doc is not None and hb_doc["status"] == "ok"
        assert hb_doc["sink"]["failures"] >= 1 and hb_doc["sink"]["last_failure"]
        await harness.close()
    finally:
        await reader.aclose()
        private.stop(crash=True)


async def test_dry_run_writes_nothing(
    harness: Harness, fs: Reader, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    block_google(monkeypatch)  # a dry run needs neither the package nor credentials
    caplog.set_level(logging.INFO, logger="navstream.firestore")
    app, consumer = await harness.start({"dry_run": True})
    await run_step(app, consumer, *desk())
    await consumer.tick()
    await settle(app)
    sink = sink_of(app)
    assert sink.stats.would_write >= 4 and sink.stats.writes == 0
    would = [r for r in caplog.records if getattr(r, "event", "") == "firestore_dry_run"]
    assert f"{harness.root}/dev/nav/total" in {r.path for r in would}  # type: ignore[attr-defined]
    beat = await app.redis.hgetall(hb_key(app))
    assert beat["firestore.status"] == "degraded" and "dry run" in beat["firestore.reason"]
    await harness.close()
    monkeypatch.undo()
    assert await fs.docs(f"{harness.root}/dev/nav") == {}
    assert await fs.docs(f"{harness.root}/dev/heartbeats") == {}
    assert await app.redis.get(app.keys.state(writes_key(DAY))) is None


async def test_history_is_bounded(harness: Harness, fs: Reader) -> None:
    clock = ManualClock(START_MS - START_MS % 60_000)
    seen = clock.now_ms() - 1_000  # observed before the clock ([consumer] max_future_ms is a few seconds)
    app, consumer = await harness.start({"history_every_s": 60.0, "history_keep": 2}, clock=clock)
    await run_step(app, consumer, *desk(seen))
    for i in range(1, 5):
        await settle(app)  # the index is written once the documents are
        clock.advance(60_000)
        await run_step(app, consumer, balance("USDT", f"{1000 + i}", seen + i))
    await settle(app)
    await consumer.tick()  # the last interval's prune
    await settle(app)
    history = await fs.docs(f"{harness.root}/dev/nav_history")
    per_scope: dict[str, list[int]] = {}
    for data in history.values():
        per_scope.setdefault(data["scope_id"], []).append(data["bucket_ms"])
    now = clock.now_ms()
    assert sorted(per_scope["total"]) == [now - 60_000, now], per_scope
    assert all(len(buckets) == 2 for buckets in per_scope.values()), per_scope
    assert Decimal(history[history_doc_id("total", now)]["nav"]) == Decimal("49504.25")


async def test_preview_and_status_write_nothing(
    harness: Harness,
    fs: Reader,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: Backend,
    tmp_path: Path,
) -> None:
    if backend.kind != "real":
        pytest.skip("the CLI connects to a real Redis")
    app, consumer = await harness.start()
    await run_step(app, consumer, *desk())
    await settle(app)
    path = tmp_path / "preview.toml"
    path.write_text(
        f'[firestore]\nproject = "{PROJECT}"\nenv = "staging"\nroot_collection = "{harness.root}"\n'
        '[nav]\npegs = {USDT = "1"}\nroutes = {BTC = "BTC/USDT"}\n'
    )
    monkeypatch.delenv("NAVSTREAM_PLUGINS", raising=False)
    assert (
        await asyncio.to_thread(
            main,
            [
                "firestore",
                "preview",
                "--json",
                "--config",
                str(path),
                "--redis-url",
                REDIS_URL,
                "--prefix",
                app.keys.prefix,
            ],
        )
        == 0
    )
    shown = json.loads(capsys.readouterr().out)
    total = shown[f"{harness.root}/staging/nav/total"]
    assert Decimal(total["nav"]) == Decimal("49500.75") and total["status"] == "failed"
    assert await fs.docs(f"{harness.root}/staging/nav") == {}
    assert (
        await asyncio.to_thread(
            main, ["status", "--json", "--config", str(path), "--redis-url", REDIS_URL, "--prefix", app.keys.prefix]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["plugins"]["firestore"] == {"enabled": False}
    section = await firestore_plugin_of(app).navstream_status(app)
    assert section["leader"] == app.consumer_name and section["writes_today"] >= 2
    assert section["path"] == f"{harness.root}/dev"


# --- credentials never enter the repository -----------------------------------------------------

#: A private key in PEM form, or a Google service-account key file (built here, so that this
#: file does not match itself).
_PEM = "-----BEGIN " + r"(?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"
_SERVICE_ACCOUNT = r'"type"\s*:\s*"service_' + r'account"'


def _repository_files() -> list[Path]:
    """Every file git would commit: tracked, or untracked and not ignored."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git work tree")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def test_no_credential_file_can_enter_the_repository() -> None:
    import re

    pem, service_account = re.compile(_PEM), re.compile(_SERVICE_ACCOUNT)
    found = []
    for path in _repository_files():
        if path.stat().st_size > 2_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        if pem.search(text) or (service_account.search(text) and "private_key" in text):
            found.append(str(path.relative_to(ROOT)))
    assert not found, f"credentials in files git would commit: {found}"
    # and the usual names of key files are ignored wherever they are
    names = [
        "key.pem",
        "config/prod-firebase-adminsdk-x1.json",
        "deploy/service-account.json",
        "service_account.json",
        "application_default_credentials.json",
        ".env",
        "x/.env.prod",
        "tools/firestore-emulator/node_modules/a.js",
        "tls.key",
        "cert.p12",
    ]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *names], cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout.split()
    assert sorted(ignored) == sorted(names)
