"""A plugin that exists only in this file reports through the reporting hooks, and the endpoint
shows it: its panels on the status page (in headless Chromium) and in ``/api/status``, its
families in ``/metrics``, its readiness reason in ``/readyz``. A plugin whose reporting hooks
raise does not break any of them for the others: its error is shown in its place.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from support.browser import Browser
from support.serving import FAST, metrics_of, sample, serving

from navstream import (
    AppProtocol,
    Cell,
    Column,
    Fact,
    Facts,
    Metric,
    Panel,
    PluginMetrics,
    Row,
    StatusSection,
    Table,
    Text,
    counter_family,
    gauge_family,
    hookimpl,
)

pytestmark = pytest.mark.usefixtures("no_cache")  # every request reads afresh


class Acme:
    """A third-party plugin: a widget table, a count, and a warm-up that makes it not ready."""

    def __init__(self) -> None:
        self.warming = False

    @hookimpl
    def navstream_status_page(self, now_ms: int) -> StatusSection:
        table = Table(
            id="acme-widgets",
            columns=[Column("widget"), Column("state"), Column("count", num=True)],
            rows=[
                Row(
                    key="w-1",
                    cells=[Cell("sprocket"), Cell("spinning", badge="widget", tone="ok"), Cell("1,204", num=True)],
                ),
                Row(
                    key="w-2",
                    cells=[
                        Cell("gear"),
                        Cell("jammed", badge="widget", tone="critical", title="tooth 7 missing"),
                        Cell("0", num=True),
                    ],
                ),
            ],
        )
        return StatusSection(
            panels=[
                Panel(
                    id="acme-section",
                    title="Acme widgets",
                    blocks=[
                        table,
                        Facts([Fact("mode", "production"), Fact("warming", "yes" if self.warming else "no")]),
                        Text("Widgets as of the last count.", id="acme-note", muted=True),
                    ],
                )
            ],
            fields={"acme": {"widgets": 2}},
        )

    @hookimpl
    async def navstream_metrics(self, app: AppProtocol) -> PluginMetrics:
        await app.redis.ping()  # may read Redis: called at scrape time, awaited
        widgets = gauge_family("navstream_acme_widgets", "Widgets by state.", ["state"])
        widgets.add_metric(["spinning"], 1)
        widgets.add_metric(["jammed"], 1)
        spins = counter_family("navstream_acme_spins", "Spins since start.")
        spins.add_metric([], 42)
        return PluginMetrics(families=(widgets, spins), health_counters=frozenset({"sent"}))

    @hookimpl
    def navstream_readiness(self, ready_on_stale_data: bool) -> list[str]:
        return ["acme is warming up its widgets"] if self.warming else []

    @hookimpl
    def navstream_health(self) -> dict[str, Any]:
        return {"status": "ok", "sent": 5, "queue": 2}


class Broken:
    """Every reporting hook raises."""

    @hookimpl
    def navstream_status_page(self) -> StatusSection:
        raise RuntimeError("page exploded")

    @hookimpl
    def navstream_metrics(self) -> list[Metric]:
        raise RuntimeError("metrics exploded")

    @hookimpl
    async def navstream_readiness(self) -> list[str]:
        raise RuntimeError("readiness exploded")


class Plain:
    """Only ``navstream_status`` (what ``navstream status`` shows): drawn on the page as it is."""

    @hookimpl
    def navstream_status(self) -> dict[str, Any]:
        return {"queued": 3, "peers": [{"name": "alpha", "up": True}, {"name": "beta", "up": False}]}


class Clash:
    """A family named like one of navstream's own: left out, counted as Clash's error."""

    @hookimpl
    def navstream_metrics(self) -> list[Metric]:
        return [gauge_family("navstream_ready", "not mine")]


def panels_of(doc: dict[str, Any], plugin: str) -> list[dict[str, Any]]:
    return list(doc["sections"][plugin]["panels"])


async def test_a_third_party_plugin_reports_on_every_endpoint(make_app: Any) -> None:
    acme = Acme()
    app = make_app(plugins=[("acme", acme), ("plain", Plain())], consumer=FAST)
    async with serving(app) as (_, client):
        doc = (await client.get("/api/status")).json()
        (panel,) = panels_of(doc, "acme")
        assert panel["id"] == "acme-section" and panel["title"] == "Acme widgets"
        table, facts, note = panel["blocks"]
        assert table["kind"] == "table" and [r["key"] for r in table["rows"]] == ["w-1", "w-2"]
        assert table["rows"][1]["cells"][1] == {
            "text": "jammed",
            "badge": "widget",
            "tone": "critical",
            "title": "tooth 7 missing",
        }
        assert facts == {
            "kind": "facts",
            "items": [{"label": "mode", "value": "production"}, {"label": "warming", "value": "no"}],
        }
        assert note["kind"] == "text" and note["id"] == "acme-note"
        assert doc["acme"] == {"widgets": 2}  # a field it keeps at the top level
        assert doc["report_errors"] == []
        # A plugin with only navstream_status: drawn as it is, facts and a table.
        assert doc["status"]["plain"]["queued"] == 3
        (plain,) = panels_of(doc, "plain")
        kinds = [b["kind"] for b in plain["blocks"]]
        assert kinds == ["facts", "text", "table"]
        assert plain["blocks"][0]["items"] == [{"label": "queued", "value": "3"}]
        assert [[c["text"] for c in r["cells"]] for r in plain["blocks"][2]["rows"]] == [
            ["alpha", "true"],
            ["beta", "false"],
        ]

        m = metrics_of((await client.get("/metrics")).text)
        assert sample(m, "navstream_acme_widgets", state="jammed") == 1
        assert sample(m, "navstream_acme_spins_total") == 42
        assert sample(m, "navstream_plugin_counter_total", plugin="acme", key="sent") == 5  # declared a count
        assert sample(m, "navstream_plugin_health_value", plugin="acme", key="queue") == 2

        assert (await client.get("/readyz")).json() == {"ready": True}
        acme.warming = True
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["reasons"] == ["acme is warming up its widgets"]
        doc = (await client.get("/api/status")).json()
        assert doc["ready"] is False and doc["reasons"] == ["acme is warming up its widgets"]
        assert sample(metrics_of((await client.get("/metrics")).text), "navstream_ready") == 0


async def test_a_plugin_whose_reporting_hooks_raise_breaks_nothing_else(make_app: Any) -> None:
    app = make_app(plugins=[("broken", Broken()), ("acme", Acme()), ("clash", Clash())], consumer=FAST)
    async with serving(app) as (_, client):
        doc = (await client.get("/api/status")).json()
        assert panels_of(doc, "acme")[0]["title"] == "Acme widgets"
        broken = doc["sections"]["broken"]
        assert broken["error"] == "RuntimeError: page exploded"
        assert broken["panels"][0]["blocks"][0] == {
            "kind": "text",
            "text": "plugin broken: its status could not be read: RuntimeError: page exploded",
            "error": True,
        }
        assert doc["report_errors"] == ["plugin 'broken': navstream_status_page: RuntimeError: page exploded"]

        for _ in range(2):
            m = metrics_of((await client.get("/metrics")).text)
        assert sample(m, "navstream_acme_widgets", state="spinning") == 1
        assert sample(m, "navstream_plugin_report_errors_total", plugin="broken") == 2
        assert sample(m, "navstream_plugin_report_errors_total", plugin="clash") == 2
        assert sample(m, "navstream_ready") in (0, 1)  # navstream's own family, not Clash's
        assert ("navstream_plugin_report_errors_total", (("plugin", "acme"),)) not in m

        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["reasons"] == [
            "plugin broken cannot tell its readiness: RuntimeError: readiness exploded"
        ]


async def test_a_plugin_that_runs_late_loses_only_its_own_part(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from navstream.serve import routes

    monkeypatch.setattr(routes, "READ_TIMEOUT_S", 0.2)

    class Slow:
        @hookimpl
        async def navstream_metrics(self) -> list[Metric]:
            await asyncio.sleep(5)
            return []

    app = make_app(plugins=[("slow", Slow()), ("acme", Acme())], consumer=FAST)
    async with serving(app) as (_, client):
        m = metrics_of((await client.get("/metrics")).text)
        assert sample(m, "navstream_acme_spins_total") == 42
        assert sample(m, "navstream_plugin_report_errors_total", plugin="slow") == 1


async def test_the_status_page_draws_a_third_party_plugin(
    browser_paths: tuple[str, str],
    make_app: Any,
    tmp_path: Path,
) -> None:
    """In headless Chromium: Acme's panel, drawn from its typed document like the built-ins', and
    the broken plugin's error in its place; the page's own sections still drawn."""
    chromium, chromedriver = browser_paths
    app = make_app(plugins=[("acme", Acme()), ("broken", Broken()), ("plain", Plain())], consumer=FAST)
    state = """
    const cells = tr => [...tr.cells].map(td => td.textContent);
    const acme = document.getElementById("acme-section");
    const broken = document.querySelector("section[data-plugin=broken]");
    const plain = document.querySelector("section[data-plugin=plain]");
    const jammed = document.querySelector("#acme-widgets tr[data-key=w-2] .badge");
    return {
      loaded: document.body.dataset.loaded === "true",
      title: acme && acme.querySelector("h2").textContent,
      rows: acme ? [...acme.querySelectorAll("#acme-widgets tbody tr")].map(cells) : [],
      jammed: jammed && {cls: jammed.className, title: jammed.title, bg: getComputedStyle(jammed).backgroundColor},
      facts: acme ? [...acme.querySelectorAll("ul.facts li")].map(li => li.textContent) : [],
      note: (document.getElementById("acme-note") || {}).textContent,
      broken: broken && broken.querySelector("p.error").textContent,
      plain: plain ? [...plain.querySelectorAll("tbody tr")].map(cells) : [],
      errors: [...document.querySelectorAll("#report-errors li")].map(li => li.textContent),
      consumers: document.querySelectorAll("#consumers-table tbody tr").length,
    };
    """
    async with serving(app) as (_, _client):
        url = f"http://127.0.0.1:{app.settings.http.port}/"
        browser = await asyncio.to_thread(Browser, chromium, chromedriver, tmp_path)
        try:
            await asyncio.to_thread(browser.open, url)
            page: dict[str, Any] = {}
            for _ in range(200):
                page = await asyncio.to_thread(browser.js, state)
                if page["loaded"] and page["title"]:
                    break
                await asyncio.sleep(0.1)
            await asyncio.to_thread(browser.screenshot, tmp_path / "acme.png")
        finally:
            await asyncio.to_thread(browser.quit)
    assert page["title"] == "Acme widgets", page
    assert page["rows"] == [["sprocket", "spinning", "1,204"], ["gear", "jammed", "0"]]
    assert page["jammed"] == {"cls": "badge widget widget-jammed", "title": "tooth 7 missing", "bg": "rgb(198, 40, 40)"}
    assert page["facts"] == ["mode:production", "warming:no"]
    assert page["note"] == "Widgets as of the last count."
    assert page["broken"] == "plugin broken: its status could not be read: RuntimeError: page exploded"
    assert page["plain"] == [["alpha", "true"], ["beta", "false"]]
    assert page["errors"] == ["plugin 'broken': navstream_status_page: RuntimeError: page exploded"]
    assert page["consumers"] >= 1
