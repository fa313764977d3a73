"""The number grammar, at the path (``navstream.numbers``) that plugins made by an earlier
``navstream new-plugin`` import, so that they keep loading. New code imports from the
``navstream`` facade (inside navstream: ``navstream.contract.numbers``).
"""

from navstream.contract.numbers import *  # noqa: F403 - the whole public module, re-exported as it was
