"""The loop's garbage-collector settings, applied once startup is done.

Its own module because it is process-wide tuning, not the loop's logic: the consumer applies it
after the startup hooks and before the first tick.
"""

from __future__ import annotations

import gc

#: Allocations between young-generation collections while the loop runs (CPython's default is
#: 700): a batch allocates tens of thousands of short-lived objects (events, Decimals, outputs)
#: that die young anyway, and every collection also walks the survivors.
GC_THRESHOLD = (50_000, 20, 20)


def tune_gc() -> None:
    """Freeze what startup built (modules, plugins, config: it lives as long as the process)
    out of the collector's sight, and collect the young generation less often. Cycles are
    still collected, just in larger, rarer steps."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
