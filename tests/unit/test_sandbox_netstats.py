"""Interface counters from /proc/net/dev text."""
from __future__ import annotations

from pycri.sandbox.netstats import InterfaceStats, parse_net_dev

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     840      12    0    0    0     0          0         0      840      12    0    0    0     0       0          0
  eth0: 1968234    1402    1    2    0     0          0         0    93415     901    3    4    0     0       0          0
"""


def test_parse_net_dev_leaves_out_loopback() -> None:
    assert parse_net_dev(NET_DEV) == [InterfaceStats("eth0", 1968234, 1402, 1, 2, 93415, 901, 3, 4)]


def test_parse_net_dev_skips_what_it_cannot_read() -> None:
    assert parse_net_dev("") == []
    assert parse_net_dev(NET_DEV.splitlines()[0] + "\n" + NET_DEV.splitlines()[1] + "\n  eth1: 1 2 3\n") == []
