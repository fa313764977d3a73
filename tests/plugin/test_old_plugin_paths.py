"""A venue plugin made by an earlier ``navstream new-plugin`` imported navstream by module paths
that have moved since (``navstream.httppool``, ``navstream.numbers``, ``navstream.ingest``,
``navstream.pluginmanager``, ``navstream.pricecache``, ``navstream.sources``). Those imports keep
working, and give the same objects as their new homes, so such a plugin keeps loading."""

from __future__ import annotations

import subprocess
import sys

#: The navstream imports of that template's plugin.py and test_source.py, as they were.
OLD_TEMPLATE_IMPORTS = """
from navstream import ManualClock, Price, hookimpl
from navstream.config import ConfigError, Settings, load_settings
from navstream.httppool import HttpPool, check
from navstream.ingest import Ingest, IngestError
from navstream.numbers import NumberError, from_json
from navstream.pluginmanager import build_plugin_manager
from navstream.pricecache import PriceCache
from navstream.sources import Fetched, SourceConfigError, SourceContext, SourceError, SourceEvent, SourceSettings
"""


def test_the_earlier_templates_imports_still_resolve_to_the_same_objects() -> None:
    probe = (
        OLD_TEMPLATE_IMPORTS
        + """
import navstream.contract.numbers, navstream.ingest.httppool, navstream.ingest.runner, navstream.plugin.manager
assert check is navstream.ingest.httppool.check and HttpPool is navstream.ingest.httppool.HttpPool
assert from_json is navstream.contract.numbers.from_json and NumberError is navstream.contract.numbers.NumberError
assert Ingest is navstream.ingest.runner.Ingest and IngestError is navstream.ingest.runner.IngestError
assert build_plugin_manager is navstream.plugin.manager.build_plugin_manager
print("ok")
"""
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_the_ingest_package_still_refuses_names_it_does_not_have() -> None:
    import pytest

    import navstream.ingest

    with pytest.raises(AttributeError, match="Nope"):
        navstream.ingest.Nope  # noqa: B018 - the access is the test
