"""Alert throttling: a fault that lasts alerts once per cooldown, not once per batch or tick.

Shared by the loop's parts that raise alerts for repeated faults (the batch handler, the tick,
the outage handling), and reset when Redis loses the data the cooldowns were about.
"""

from __future__ import annotations

import time


class AlertThrottle:
    """At most one alert per subject per cooldown: a fault that lasts must stay visible
    (counters, heartbeat, logs) without flooding ``P:alerts``."""

    def __init__(self, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self._last: dict[object, float] = {}

    def allow(self, subject: object) -> bool:
        now = time.monotonic()
        last = self._last.get(subject)
        if last is not None and now - last < self.cooldown_s:
            return False
        if len(self._last) > 1000:  # bounded: old subjects are forgotten
            self._last.clear()
        self._last[subject] = now
        return True

    def reset(self) -> None:
        """Forget every cooldown: the alerts it held back from were lost with Redis's data."""
        self._last.clear()
