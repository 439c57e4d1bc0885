"""What the benchmarks and tests build on and the ``satclip`` commands do not: synthetic worlds
(:mod:`.worlds`) and the reference image tower rebuilt from data/reference (:mod:`.reference`)."""
