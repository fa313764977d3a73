"""The producer side (`navstream ingest`): running sources, their HTTP pool, rate limits and price cache."""

from typing import Any


def __getattr__(name: str) -> Any:
    """``from navstream.ingest import Ingest, IngestError`` (the path before 0.2) still works,
    without importing the runner with the package (its sources and HTTP need not load)."""
    if name in ("Ingest", "IngestError"):
        from navstream.ingest import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'navstream.ingest' has no attribute {name!r}")
