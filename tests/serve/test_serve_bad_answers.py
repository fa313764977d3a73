"""A plugin whose reporting hooks answer with the wrong shape (instead of raising) is told so in
its own place; the others' sections, families and readiness are served as usual: one plugin's
mistake never turns /metrics, /readyz or /api/status into a 500 for everyone."""

from __future__ import annotations

from typing import Any

import pytest
from support.serving import FAST, metrics_of, sample, serving

from navstream import StatusSection, gauge_family, hookimpl

pytestmark = pytest.mark.usefixtures("no_cache")


class Sloppy:
    @hookimpl
    def navstream_metrics(self) -> Any:
        family = gauge_family("navstream_sloppy_depth", "A depth.")
        family.add_metric([], "n/a")  # not a number: would fail the whole rendering
        return [family]

    @hookimpl
    def navstream_readiness(self) -> Any:
        return True  # not a list of reasons

    @hookimpl
    def navstream_status_page(self) -> StatusSection:
        return StatusSection(panels=[], fields={"sloppy": {("a", "tuple"): "key"}})

    @hookimpl
    def navstream_status(self) -> Any:
        return {(1, 2): "a key JSON cannot hold"}


class OneFamily:
    @hookimpl
    def navstream_metrics(self) -> Any:
        return gauge_family("navstream_onefamily_depth", "A family, not a list of them.")


class Fine:
    @hookimpl
    def navstream_metrics(self) -> Any:
        family = gauge_family("navstream_fine_depth", "A depth.")
        family.add_metric([], 7)
        return [family]

    @hookimpl
    def navstream_status(self) -> Any:
        return {"queued": 3}


async def test_a_plugin_answering_with_the_wrong_shape_breaks_nothing_for_the_others(make_app: Any) -> None:
    app = make_app(plugins=[("sloppy", Sloppy()), ("onefamily", OneFamily()), ("fine", Fine())], consumer=FAST)
    async with serving(app) as (_, client):
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        m = metrics_of(metrics.text)
        assert sample(m, "navstream_fine_depth") == 7
        assert sample(m, "navstream_plugin_report_errors_total", plugin="sloppy") >= 1
        assert sample(m, "navstream_plugin_report_errors_total", plugin="onefamily") >= 1
        assert not any(name.startswith(("navstream_sloppy", "navstream_onefamily")) for name, _ in m)

        ready = await client.get("/readyz")
        assert ready.status_code == 503  # fails closed: a plugin that cannot tell is a reason
        assert any("sloppy cannot tell its readiness" in r for r in ready.json()["reasons"])

        status = await client.get("/api/status")
        assert status.status_code == 200
        doc = status.json()
        assert doc["status"]["fine"] == {"queued": 3}
        assert "not JSON" in doc["status"]["sloppy"]["error"]
        assert "cannot be shown" in doc["sections"]["sloppy"]["error"]
        assert "sloppy" not in doc
