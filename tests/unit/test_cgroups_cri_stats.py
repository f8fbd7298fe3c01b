"""The CRI MemoryUsage made from a cgroup's stats (criserver.stats), the same on v1 and v2:
the managers map their files to the same Stats fields."""
from __future__ import annotations

from pathlib import Path

from pycri.cgroups.v2 import V2Manager
from pycri.criserver import stats as cri_stats
from tests.unit.test_cgroups_v2 import fake_tree


def test_memory_usage_from_v2_files(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "cg", "/c1")
    c1 = root / "c1"
    (c1 / "memory.current").write_text("10000000\n")
    (c1 / "memory.max").write_text("20000000\n")
    (c1 / "memory.stat").write_text("anon 6000000\nfile 4000000\ninactive_file 1000000\npgfault 77\npgmajfault 3\n")
    memory = cri_stats._memory(V2Manager(str(root), "/c1").stats(), 123)
    assert memory.timestamp == 123
    assert memory.usage_bytes.value == 10_000_000
    assert memory.working_set_bytes.value == 9_000_000  # usage - inactive_file, as cadvisor
    assert memory.available_bytes.value == 11_000_000
    assert memory.rss_bytes.value == 6_000_000  # anon
    assert (memory.page_faults.value, memory.major_page_faults.value) == (77, 3)
