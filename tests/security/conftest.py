"""Security tests: each reproduces one attack on a real pycri (and, where it matters, as an
unprivileged host user) and fails without the fix. docs/security.md lists them by class."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import Registries, pycri, reachable_tmp_path, registries  # noqa: F401  (fixtures)
from tests.security.hostile import attacker_user

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def attacker(registries: Registries) -> str:  # noqa: F811
    """The name of an unprivileged host user (see hostile.as_attacker)."""
    return attacker_user().pw_name
