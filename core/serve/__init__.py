"""The consumer's HTTP endpoint: probes, metrics, the status API and page, fed by the plugins' reporting hooks."""
