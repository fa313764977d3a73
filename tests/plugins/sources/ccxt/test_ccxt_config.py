"""The ``ccxt`` kind's settings, as ``navstream config check FILE`` and ``navstream ingest`` read
them: every mistake is one line naming ``sources.<name>`` and the setting, before any request."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import msgspec
import pytest

from navstream.cli import main
from navstream.plugin.manager import build_plugin_manager

KINDS = build_plugin_manager(env={}).source_kinds
GOOD = {
    "kind": "ccxt",
    "exchange": "okx",
    "account": "main",
    "symbols": ["BTC/USDT", "BTC/USDT:USDT"],
    "api_key_env": "OKX_KEY",
    "secret_env": "OKX_SECRET",
    "password_env": "OKX_PASSPHRASE",
}


def toml(name: str, table: dict[str, Any]) -> str:
    lines = [f"[sources.{name}]"]
    for key, value in table.items():
        if isinstance(value, dict):
            value_text = "{" + ", ".join(f'"{k}" = "{v}"' for k, v in value.items()) + "}"
        elif isinstance(value, list):
            value_text = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        elif isinstance(value, str):
            value_text = f'"{value}"'
        else:
            value_text = str(value)
        lines.append(f"{key} = {value_text}")
    return "\n".join(lines) + "\n"


def check(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str) -> tuple[int, str, str]:
    cfg = tmp_path / "navstream.toml"
    cfg.write_text(text)
    try:
        code = main(["config", "check", str(cfg)])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_config_check_accepts_a_ccxt_section(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = toml("okx-main", {**GOOD, "assets": {"USDT": "USD₮"}, "market_type": "swap", "interval_s": 15})
    prices = {"kind": "ccxt", "exchange": "kraken", "fetch": ["prices"], "symbols": ["BTC/USD"]}
    code, out, err = check(capsys, tmp_path, text + toml("kraken-prices", prices))
    assert code == 0, err
    assert "[sources.okx-main] ok (kind ccxt)" in out and "[sources.kraken-prices] ok (kind ccxt)" in out


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"exchange": "okex5"}, ["sources.okx-main", "'okex5' is not a CCXT exchange id", "did you mean", "'okx'"]),
        ({"exchange": "nosuchvenue"}, ["'nosuchvenue' is not a CCXT exchange id"]),
        ({"account": ""}, ["`account` must name the navstream account the balances and positions"]),
        ({"account": "   "}, ["`account` must name"]),
        ({"fetch": []}, ["`fetch` must list at least one"]),
        ({"fetch": ["balances", "trades"]}, ["sources.okx-main.fetch", "trades"]),
        ({"fetch": ["prices", "prices"]}, ["lists a kind twice"]),
        ({"fetch": ["prices"], "symbols": []}, ["`symbols` must list the CCXT symbols"]),
        ({"symbols": ["BTCUSDT"]}, ["'BTCUSDT' is not a CCXT unified symbol"]),
        ({"symbols": ["BTC/USDT", "BTC/USDT"]}, ["`symbols` lists a symbol twice"]),
        ({"position_symbols": ["BTC / USDT"]}, ["`position_symbols`"]),
        ({"market_type": "option"}, ["sources.okx-main.market_type"]),
        ({"password_env": ""}, ["`password_env` must name the environment variable holding the password"]),
        ({"api_key_env": "OKX-KEY"}, ["`api_key_env`: 'OKX-KEY' is not an environment variable name"]),
        ({"secret_env": "1SECRET"}, ["`secret_env`"]),
        ({"base_url": "http://okx.example.com"}, ["http:// only to this machine", "credentials would travel in clear"]),
        ({"base_url": "http://10.0.0.5:8080"}, ["http:// only to this machine"]),
        ({"base_url": "https://proxy.example.com/okx"}, ["without a path"]),
        ({"base_url": "ftp://127.0.0.1"}, ["`base_url` must be an http(s) URL"]),
        ({"weight_per_minute": 600}, ["above what CCXT allows okx (545 cost units a minute)"]),
        ({"weight_per_minute": -1}, ["weight_per_minute"]),
        ({"assets": {"XBT": "B T C"}}, ["`assets`"]),
        ({"assets": {"XBT": "BTC\u200b"}}, ["`assets`"]),
        ({"assets": {"XBT": "\\u0001"}}, ["`assets`"]),
        ({"venue": "okx\\u007f"}, ["`venue`"]),
        ({"base_url": "https://user:pa55@okx-proxy.example.com"}, ["must not carry a user or password"]),
        ({"base_url": "http://localhost@evil.example.com"}, ["must not carry a user or password"]),
        ({"base_url": "http://127.0.0.1.evil.example.com"}, ["http:// only to this machine"]),
        ({"timeout_s": 0}, ["timeout_s"]),
        ({"exchnage": "okx"}, ["unknown field `exchnage`"]),
    ],
    ids=lambda v: str(v)[:40],
)
def test_config_check_refuses_a_bad_ccxt_section(
    change: dict[str, Any], words: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = check(capsys, tmp_path, toml("okx-main", {**GOOD, **change}))
    assert code == 2 and out == ""
    assert err.count("\n") == 1, "one line"
    for word in words:
        assert word in err


@pytest.mark.parametrize(("exchange", "budget"), [("kucoin", 8000), ("phemex", 497), ("okx", 545)])
def test_a_fractional_rate_limit_never_raises_the_budget(exchange: str, budget: int) -> None:
    """kucoin's rateLimit is 7.5 ms: 8,000 cost units a minute, not 60,000 // 7 = 8,571."""
    table = {"kind": "ccxt", "exchange": exchange, "fetch": ["prices"], "symbols": ["BTC/USDT"]}
    msgspec.convert({**table, "weight_per_minute": budget}, KINDS["ccxt"].settings)
    with pytest.raises(msgspec.ValidationError, match=f"above what CCXT allows {exchange} \\({budget} cost units"):
        msgspec.convert({**table, "weight_per_minute": budget + 1}, KINDS["ccxt"].settings)


def test_loopback_http_and_https_anywhere_are_accepted() -> None:
    for url in ("http://127.0.0.1:8080", "http://localhost", "http://[::1]:9000", "https://okx-proxy.example.com"):
        assert msgspec.convert({**GOOD, "base_url": url}, KINDS["ccxt"].settings).base_url == url
    prices_only = msgspec.convert(
        {"kind": "ccxt", "exchange": "okx", "fetch": ["prices"], "symbols": ["BTC/USDT"]}, KINDS["ccxt"].settings
    )
    assert prices_only.account == "" and prices_only.api_key_env == "", "public prices need neither"


def test_without_the_extra_a_ccxt_section_is_one_config_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from navstream.plugins.sources.ccxt import settings

    real_import = builtins.__import__

    def no_ccxt(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ccxt" or name.startswith("ccxt."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    settings.ccxt_module.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_ccxt)
    monkeypatch.setattr(settings.importlib, "import_module", lambda name: no_ccxt(name))
    try:
        code, _, err = check(capsys, tmp_path, toml("okx-main", GOOD))
    finally:
        monkeypatch.undo()
        settings.ccxt_module.cache_clear()
    assert code == 2
    assert "the ccxt source kind needs the ccxt extra: pip install 'navstream[ccxt]'" in err


def test_a_config_without_ccxt_sources_does_not_import_ccxt(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "navstream.toml"
    cfg.write_text(toml("coingecko", {"ids": {"BTC": "bitcoin"}}))
    code = (
        "import contextlib, io, sys\nfrom navstream.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['config', 'check', sys.argv[1]])\n"
        "    except SystemExit: pass\n"
        "print('ccxt' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr
