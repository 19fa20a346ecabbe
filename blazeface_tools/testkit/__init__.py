"""Code shared by tests/ and loadtest/: real servers on loopback, hand-built images, the bad-input
corpus and the benchmark photo mix."""
