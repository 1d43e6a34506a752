"""Hypothesis profiles for the fuzz tests: `ci` (default) is derandomized, so every run tries the same
examples; HYPOTHESIS_PROFILE=fuzz-long explores more, with fresh random examples each run."""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import settings

# ~150 examples per fuzz test: 4 tests, about 600 examples and 20-40 s on one core
settings.register_profile(
    "ci", derandomize=True, database=None, max_examples=150, deadline=timedelta(seconds=5), print_blob=True
)
settings.register_profile("fuzz-long", max_examples=3000, deadline=timedelta(seconds=10), print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
