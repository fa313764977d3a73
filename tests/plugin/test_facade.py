"""The facade ``navstream``: every name it promises resolves, and importing it (or the client a
trading engine imports) loads no more than what is used: not Redis, the HTTP client or the
metrics library until a name that needs them is touched."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import navstream

HEAVY = ("redis", "httpx", "prometheus_client")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_every_promised_name_resolves_to_what_its_module_defines() -> None:
    for name in navstream.__all__:
        assert getattr(navstream, name) is not None, name
    from navstream.app import App
    from navstream.serve.report import gauge

    assert navstream.App is App and navstream.gauge_family is gauge
    assert set(navstream.__all__) <= set(dir(navstream))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        navstream.nope  # noqa: B018 - the access is the test


@pytest.mark.parametrize(
    ("code", "absent"),
    [
        ("import navstream", HEAVY),
        ("from navstream import Balance, Outputs, hookimpl, AppProtocol, numbers", HEAVY),
        ("import navstream.client", ("httpx", "prometheus_client")),
    ],
)
def test_importing_loads_only_what_is_used(code: str, absent: tuple[str, ...]) -> None:
    loaded = _loaded_after(code)
    assert not set(absent) & set(loaded), sorted(set(absent) & set(loaded))


def test_using_a_heavy_name_loads_its_module() -> None:
    assert "redis" in _loaded_after("import navstream; navstream.App")
