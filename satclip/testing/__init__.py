"""What the benchmarks and tests build on and the ``satclip`` commands do not: synthetic worlds (:mod:`.worlds`)."""
