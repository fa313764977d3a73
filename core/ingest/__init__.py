"""The producer side (`navstream ingest`): running sources, their HTTP pool, rate limits and price cache."""
