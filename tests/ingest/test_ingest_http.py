"""``navstream ingest``'s /healthz and /metrics (docs/observability.md, "The ingest process"):
per-source fetches and failures, per-host requests, 429/418 answers and limiter waits, served
by the consumer's HTTP server module on ``[http] ingest_port``; the command run as the compose
file runs it, checked with docker-compose.yml's own healthcheck line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, START_MS, TESTS_DIR
from support.ingest import answers, build, write_config
from support.serving import free_port, metrics_of, sample, until

from navstream.config import load_settings
from navstream.loop.consumer import StartupError


async def test_ingest_serves_healthz_and_metrics_per_source_and_host(backend: Any) -> None:
    port = free_port()
    sources = {
        "cg": {"kind": "fake-prices", "prices": {"BTC": "1", "ETH": "2"}, "interval_s": 0.1},
        "bad": {"kind": "fake-prices", "behaviour": "fail", "interval_s": 0.1},
        "slow": {"kind": "fake-prices", "behaviour": "hang", "interval_s": 0.1, "timeout_s": 0.05},
        "venue": {"kind": "stub-http", "interval_s": 0.1, "timeout_s": 5},
    }
    ingest = build(backend, sources, port, answers([200, 200, 429, 418]))
    task = asyncio.create_task(ingest.run())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as client:

            async def scraped() -> dict[Any, float]:
                return metrics_of((await client.get("/metrics")).text)

            async def enough() -> bool:
                try:
                    m = await scraped()
                except httpx.TransportError:
                    return False
                return (
                    m.get(("navstream_ingest_rate_limited_answers_total", (("code", "418"), ("host", "api.stub"))), 0)
                    >= 1
                    and m.get(("navstream_ingest_events_written_total", (("source", "cg"),)), 0) >= 2
                )

            await until(enough, timeout=30, what="a 429, a 418 and written events")
            health = await client.get("/healthz")
            assert (health.status_code, health.json()) == (200, {"alive": True, "status": "running"})
            response = await client.get("/metrics")
            assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            m = metrics_of(response.text)
            assert sample(m, "navstream_ingest_fetches_total", source="cg") >= 1
            assert sample(m, "navstream_ingest_events_written_total", source="cg") >= 2
            assert sample(m, "navstream_ingest_fetch_failures_total", source="cg", kind="error") == 0
            assert sample(m, "navstream_ingest_fetch_failures_total", source="bad", kind="error") >= 1
            assert sample(m, "navstream_ingest_fetch_failures_total", source="slow", kind="timeout") >= 1
            assert sample(m, "navstream_ingest_fetch_failures_total", source="venue", kind="rate_limited") >= 1
            assert sample(m, "navstream_ingest_last_success_timestamp_seconds", source="cg") == START_MS / 1000
            assert sample(m, "navstream_ingest_rate_limited_answers_total", host="api.stub", code="429") == 1
            assert sample(m, "navstream_ingest_rate_limited_answers_total", host="api.stub", code="418") == 1
            assert sample(m, "navstream_ingest_requests_total", host="api.stub") >= 4
            assert sample(m, "navstream_ingest_limiter_waits_total", host="api.stub") >= 1
            assert sample(m, "navstream_ingest_limiter_wait_seconds_total", host="api.stub") > 0
            assert sample(m, "navstream_ingest_unwritten", source="cg") == 0
            assert sample(m, "navstream_ingest_info", version="0.1.0") == 1
            assert any(name == "process_cpu_seconds_total" for name, _ in m)
            types = {f.name: f.type for f in text_string_to_metric_families(response.text)}
            assert types["navstream_ingest_fetches"] == types["navstream_ingest_limiter_waits"] == "counter"
            assert not [name for name, _ in m if name.endswith("_created")]

            # A loop stuck in one call is a stall: /healthz says which source.
            ingest.runs["cg"].alive_at -= 3600
            stalled = await client.get("/healthz")
            assert stalled.status_code == 503
            assert stalled.json()["reason"].startswith("loop stalled: source cg: no progress for 3600s (limit 60s)")
            ingest.runs["cg"].alive_at += 3600
    finally:
        ingest.request_stop()
        await asyncio.wait_for(task, 20)
        await ingest.aclose()
        await ingest.redis.aclose()
    assert ingest.server is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


async def test_ingest_port_in_use_stops_the_start_naming_the_setting(fake_backend: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ingest = build(fake_backend, {"cg": {"kind": "fake-prices", "prices": {"BTC": "1"}}}, port, answers([]))
        try:
            with pytest.raises(StartupError, match=rf"127.0.0.1:{port}: the port is already in use.*ingest_port"):
                await ingest.run()
            assert ingest.runs["cg"].attempts == 0
        finally:
            await ingest.aclose()
            await ingest.redis.aclose()


def test_no_port_no_server(fake_backend: Any) -> None:
    assert load_settings(env={}).http.ingest_port == 0
    assert load_settings(env={"NAVSTREAM_INGEST_HTTP_PORT": "9109"}).http.ingest_port == 9109


def compose_healthcheck() -> list[str]:
    """docker-compose.yml's healthcheck of the ingest service, with this interpreter for the
    image's (the same stdlib-only Python line)."""
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test = compose["services"]["ingest"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "/opt/venv/bin/python", "-c"] and len(test) == 4, test
    return [sys.executable, "-c", test[3]]


@pytest.mark.real_redis
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_ingest_command_serves_healthz_for_the_compose_healthcheck(real_backend: Any, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, real_backend.prefix, {"cg": {"kind": "fake-prices", "prices": {"BTC": "2"}, "interval_s": 0.5}}
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")}
    env.update(
        NAVSTREAM_INGEST_HTTP_PORT=str(port),
        NAVSTREAM_HTTP_HOST="0.0.0.0",
        NAVSTREAM_LOG_STREAM="stderr",
        PYTHONPATH=str(TESTS_DIR),
    )
    navstream = Path(sys.executable).parent / "navstream"
    log = (tmp_path / "ingest.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(navstream), "ingest", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    check = compose_healthcheck()  # it reads NAVSTREAM_INGEST_HTTP_PORT from env, as in the container
    try:
        deadline = time.monotonic() + 30
        result = subprocess.run(check, capture_output=True, timeout=30, env=env)
        while result.returncode != 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            result = subprocess.run(check, capture_output=True, timeout=30, env=env)
        assert result.returncode == 0, (result, (tmp_path / "ingest.log").read_text())
        with httpx.Client(trust_env=False, timeout=10) as client:
            text = client.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'navstream_ingest_fetches_total{source="cg"}' in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert subprocess.run(check, capture_output=True, timeout=30, env=env).returncode == 1  # gone: unhealthy
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
