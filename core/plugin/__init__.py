"""The plugin machinery: the hook specs, loading plugins, the one module that calls hooks, per-plugin isolation."""
