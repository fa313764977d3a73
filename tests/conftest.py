"""Fixtures: every Redis-backed test runs on fakeredis, and again on a real Redis when one answers.

``make_app``, the fake backend and ``run_step`` come from :mod:`navstream.testing`, the pytest
plugin navstream ships (loaded through its ``pytest11`` entry point), so that plugin authors test
with what navstream's own suite uses. What is specific to this repository is here: the
``backend`` parametrisation (fakeredis, then a real Redis) that ``navstream_backend`` is
overridden with, the state directory and the logging restored after each test. Shared helpers
(``START_MS``, ``Backend``, ``Recorder``, ...) are in tests/support/, imported as ``support``.

The real server comes from ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). Without one,
``real_redis`` tests are skipped, unless ``NAVSTREAM_REQUIRE_REDIS=1`` (CI), which makes them
fail instead. Each test gets its own key prefix and group, and its keys are deleted afterwards.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from support import Backend, require_real_redis

#: Fixtures shared by the endpoint's tests (``no_cache``) and the browser tests (``browser_paths``).
pytest_plugins = ["support.serving", "support.browser"]


@pytest.fixture(scope="session", autouse=True)
def _state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The risk gate's audit logs (and anything else kept under the user's state directory)
    go to a directory of the test session's, in this process and in every one it starts."""
    held = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))
    yield
    if held is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = held


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "real_redis" in item.keywords:
            item.add_marker(pytest.mark.usefixtures("_real_redis_gate"))


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``navstream.cli.main`` reroutes the ``navstream`` logger to a queue; give it back."""
    logger = logging.getLogger("navstream")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    yield
    logger.handlers[:] = saved[0]
    logger.propagate = saved[1]
    logger.setLevel(saved[2])


@pytest.fixture
def _real_redis_gate() -> None:
    require_real_redis()


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.real_redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """fakeredis, then a real Redis (skipped or failed as the module docstring says)."""
    b = Backend(request.param)
    yield b
    await b.cleanup()


@pytest.fixture
def navstream_backend(backend: Backend) -> Backend:
    """navstream.testing's ``make_app`` runs on ``navstream_backend``: here, on ``backend``, so
    every test built on ``make_app`` runs on fakeredis and again on a real Redis (a test module
    that overrides ``backend`` moves its apps too)."""
    return backend


@pytest.fixture
async def fake_backend() -> AsyncIterator[Backend]:
    b = Backend("fake")
    yield b


@pytest.fixture
async def real_backend() -> AsyncIterator[Backend]:
    require_real_redis()
    b = Backend("real")
    yield b
    await b.cleanup()


@pytest.fixture(params=["script", "pipeline"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Which write path every batch takes: the batch script, or the pipelined fallback
    (``MAX_SCRIPT_ARGS`` forced to 0). The test fails if the other one wrote."""
    from navstream.store import writer as writer_module
    from navstream.store.writer import Writer

    used = {"script": 0, "pipeline": 0}
    scripted, pipelined = Writer._scripted, Writer._pipelined

    async def spy_scripted(self: Writer, *args: Any) -> Any:
        used["script"] += 1
        return await scripted(self, *args)

    async def spy_pipelined(self: Writer, *args: Any) -> Any:
        used["pipeline"] += 1
        return await pipelined(self, *args)

    monkeypatch.setattr(Writer, "_scripted", spy_scripted)
    monkeypatch.setattr(Writer, "_pipelined", spy_pipelined)
    if request.param == "pipeline":
        monkeypatch.setattr(writer_module, "MAX_SCRIPT_ARGS", 0)
    yield request.param
    other = "script" if request.param == "pipeline" else "pipeline"
    assert used[request.param] > 0 and used[other] == 0, used
