"""One module per kind of command: reads (registry), changes (admin), data (drop, score, feedback), monitoring."""
