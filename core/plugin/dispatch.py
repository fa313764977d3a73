"""Calling batch hooks with each plugin isolated from the others.

Every plugin gets its own :class:`Outputs`. A plugin that raises on a batch is called again
entry by entry, so one poison entry cannot hold the others hostage: the entries it handles
alone keep their outputs, and only the entries it still fails are left for redelivery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from navstream.plugin import calls
from navstream.plugin.calls import HookTimeout, describe

log = logging.getLogger("navstream.dispatch")


@dataclass
class PluginFailure:
    plugin: str
    error: str
    #: Position in the batch -> the error of each entry this plugin still failed alone.
    failed: dict[int, str] = field(default_factory=dict)


@dataclass
class DispatchResult:
    outputs: Any
    failures: list[PluginFailure]

    def failed_positions(self) -> dict[int, str]:
        """Batch position -> every plugin error that failed it, joined with ``; ``."""
        out: dict[int, str] = {}
        for failure in self.failures:
            for pos, error in failure.failed.items():
                out[pos] = f"{out[pos]}; {error}" if pos in out else error
        return out


async def call_with_timeout(app: Any, impl: Any, kwargs: dict[str, Any], timeout: float | None = None) -> Any:
    """Call one hook implementation; an awaitable it returns must finish within ``timeout``
    (default ``[consumer] hook_timeout_s``).

    A synchronous hook cannot be interrupted: it runs to the end, blocking the loop, which is
    why plugins that do I/O must be async.
    """
    setting = app.settings.consumer.hook_timeout_s
    return await calls.call(impl, kwargs, setting if timeout is None else timeout, setting)


async def dispatch_batch(
    app: Any,
    hook_name: str,
    arg_name: str,
    items: Sequence[Any],
    outputs_factory: Any,
) -> DispatchResult:
    """Call ``hook_name`` on every plugin with ``items``, isolating failures per plugin.

    The plugins run concurrently (one waiting on Redis does not hold up the others); their
    outputs are merged in plugin order, so the result does not depend on who finished first.

    :param arg_name: the hook argument that carries the items (``events`` or ``orders``).
    :param outputs_factory: makes an empty :class:`Outputs` for one call.
    """
    impls = calls.impls(app.pm, hook_name)
    runs = [_run_batch(app, impl, hook_name, arg_name, items, outputs_factory) for impl in impls]
    results = [await runs[0]] if len(runs) == 1 else await asyncio.gather(*runs)
    merged = outputs_factory()
    failures: list[PluginFailure] = []
    for out, failure in results:
        merged.merge(out)
        if failure is not None:
            failures.append(failure)
    return DispatchResult(merged, failures)


async def _run_batch(
    app: Any,
    impl: Any,
    hook_name: str,
    arg_name: str,
    items: Sequence[Any],
    outputs_factory: Any,
) -> tuple[Any, PluginFailure | None]:
    """One plugin's outputs for the batch, and its failure if it raised (then the outputs of
    the entries it handled alone)."""
    out = outputs_factory()
    try:
        await call_with_timeout(app, impl, {"app": app, arg_name: items, "out": out})
        return out, None
    except Exception as exc:  # noqa: BLE001 - isolation is the point
        error = describe(exc, impl.plugin_name)
    log.warning(
        "plugin failed a batch, retrying entry by entry",
        extra={
            "event": "plugin_batch_failed",
            "plugin": impl.plugin_name,
            "hook": hook_name,
            "size": len(items),
            "error": error,
        },
    )
    failure = PluginFailure(impl.plugin_name, error)
    alone = outputs_factory()
    if len(items) == 1:
        failure.failed[0] = error
    else:
        await _retry_each(app, impl, arg_name, items, alone, outputs_factory, failure)
    return alone, failure


async def _retry_each(
    app: Any,
    impl: Any,
    arg_name: str,
    items: Sequence[Any],
    merged: Any,
    outputs_factory: Any,
    failure: PluginFailure,
) -> None:
    """Each entry alone, all of them within one ``hook_timeout_s`` budget: a plugin that hangs
    on everything costs two timeouts per batch, not one per entry. One entry alone gets a tenth
    of the budget, so a single hanging entry leaves time for the healthy ones after it."""
    budget = app.settings.consumer.hook_timeout_s
    deadline = time.monotonic() + budget
    for pos, item in enumerate(items):
        if time.monotonic() >= deadline:
            failure.failed[pos] = describe(
                HookTimeout("no time left to retry it alone (hook_timeout_s spent on this batch)"), impl.plugin_name
            )
            continue
        out = outputs_factory()
        try:
            await call_with_timeout(
                app,
                impl,
                {"app": app, arg_name: [item], "out": out},
                timeout=max(0.001, min(budget / 10, deadline - time.monotonic())),
            )
        except Exception as exc:  # noqa: BLE001
            failure.failed[pos] = describe(exc, impl.plugin_name)
            continue
        merged.merge(out)


async def dispatch_tick(
    app: Any, now_ms: int, outputs_factory: Any, plugins: Collection[str] | None = None
) -> DispatchResult:
    """Call ``navstream_tick`` on every plugin; a failing plugin loses only its own outputs.

    :param plugins: only these plugins (by name) are ticked; None: every one. A consumer's role
        decides (:func:`navstream.loop.roles.tick_plugins`), so an orders consumer does not run
        the event plugins' time-based work between orders.
    """
    merged = outputs_factory()
    failures: list[PluginFailure] = []
    for impl in calls.impls(app.pm, "navstream_tick"):
        if plugins is not None and impl.plugin_name not in plugins:
            continue
        out = outputs_factory()
        try:
            await call_with_timeout(app, impl, {"app": app, "now_ms": now_ms, "out": out})
        except Exception as exc:  # noqa: BLE001
            failures.append(PluginFailure(impl.plugin_name, describe(exc, impl.plugin_name)))
            continue
        merged.merge(out)
    return DispatchResult(merged, failures)
