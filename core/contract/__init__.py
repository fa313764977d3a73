"""The wire contract in code: stream keys, events and their decoder, the number grammar, order
hashes, the outputs a batch writes."""
