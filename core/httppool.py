"""HTTP for sources, at the path (``navstream.httppool``) that plugins made by an earlier
``navstream new-plugin`` import, so that they keep loading. New code imports from the
``navstream`` facade (inside navstream: ``navstream.ingest.httppool``).
"""

from navstream.ingest.httppool import *  # noqa: F403 - the whole public module, re-exported as it was
