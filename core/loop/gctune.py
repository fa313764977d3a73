"""The loop's garbage-collector and thread-switch settings, applied once startup is done.

Its own module because it is process-wide tuning, not the loop's logic: the consumer applies it
after the startup hooks and before the first tick.
"""

from __future__ import annotations

import gc
import sys

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


#: How long a thread holding the GIL runs before one that waits for it gets its turn (CPython's
#: default is 5 ms). The loop shares the process with helper threads that compute (the risk
#: gate's audit writer encodes and hashes every decision; logging formats records): at the
#: default, an order read while one of them computes can wait up to 5 ms for the GIL.
SWITCH_INTERVAL_S = 0.0005


def tune_switching() -> None:
    """Let the loop take the GIL back from a computing helper thread within half a millisecond."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
