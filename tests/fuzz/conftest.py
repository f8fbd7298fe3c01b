"""Fuzzing with hypothesis, reproducible and bounded for CI.

The `pycri-ci` profile (the default) is derandomized (the same examples on every run), has no
per-example deadline (the machine is shared) and a fixed number of examples per test, so the
whole directory runs in well under a minute. `HYPOTHESIS_PROFILE=pycri-long` searches longer,
with random seeds, for a local hunt; a crash it finds becomes an `@example` of its test.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "pycri-ci", max_examples=100, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "pycri-long", max_examples=20000, deadline=None, derandomize=False, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "pycri-ci"))
