"""navstream's built-in plugins. Each is an ordinary plugin module, registered through the
``navstream`` entry-point group exactly like a third-party one, and can be disabled the same way."""
