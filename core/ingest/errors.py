"""The error a source raises for a fetch that failed (:mod:`navstream.sources` re-exports it):
its own module, so the HTTP pool that raises it need not import the source API."""


class SourceError(RuntimeError):
    """A fetch that failed; its message goes into ``source_status.error`` (so no secrets)."""
