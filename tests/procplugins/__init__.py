"""Plugin modules loaded by the process-level tests through ``[plugins] modules``."""
