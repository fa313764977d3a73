"""Loading plugins, at the path (``navstream.pluginmanager``) that plugins made by an earlier
``navstream new-plugin`` import, so that they keep loading. New code imports from the
``navstream`` facade (inside navstream: ``navstream.plugin.manager``).
"""

from navstream.plugin.manager import *  # noqa: F403 - the whole public module, re-exported as it was
