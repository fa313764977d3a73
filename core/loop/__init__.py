"""The consumer loop: read, handle and acknowledge batches, tick, reclaim, survive Redis outages;
it tells observers what it did."""
