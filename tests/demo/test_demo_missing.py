"""`navstream demo` where its in-process Redis is left out (the container image): one line, no traceback."""

from __future__ import annotations

import sys

import pytest

from navstream.cli import main


def test_the_demo_without_fakeredis_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "fakeredis", None)  # `import fakeredis` now fails
    monkeypatch.delitem(sys.modules, "navstream.demo", raising=False)
    assert main(["demo", "--fast"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "the demo needs fakeredis" in err
