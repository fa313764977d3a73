"""The price cache, at the path (``navstream.pricecache``) that plugins made by an earlier
``navstream new-plugin`` import, so that they keep loading. New code imports from the
``navstream`` facade (inside navstream: ``navstream.ingest.pricecache``).
"""

from navstream.ingest.pricecache import *  # noqa: F403 - the whole public module, re-exported as it was
