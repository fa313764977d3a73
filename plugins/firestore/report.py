"""What the Firestore sink reports through navstream's reporting hooks: which numbers of its
``navstream_health`` report are running counts, so that ``/metrics`` exports them in
``navstream_plugin_counter_total`` (the others are values as of now, in
``navstream_plugin_health_value``). Its ``navstream_status`` section is drawn on the status page
as it is.
"""

from __future__ import annotations

from navstream import PluginMetrics, hookimpl

#: Keys of the sink's health report that count since the process started.
HEALTH_COUNTERS = frozenset({"writes", "batches", "failures", "coalesced", "shed", "would_write"})


class FirestoreReport:
    """The Firestore sink's reporting hook implementations, mixed into its plugin class."""

    @hookimpl
    def navstream_metrics(self) -> PluginMetrics:
        return PluginMetrics(health_counters=HEALTH_COUNTERS)
