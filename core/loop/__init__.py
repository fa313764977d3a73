"""The consumer loop: read, handle and acknowledge batches, tick, reclaim, survive Redis outages; tells observers what it did."""
