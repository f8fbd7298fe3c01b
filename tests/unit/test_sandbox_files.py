"""A pod's hostname, hosts and resolv.conf: rendering from the DNS config and atomic writes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycri.common.errors import InvalidArgument
from pycri.sandbox import files
from pycri.sandbox.files import DnsConfig


def test_resolv_conf_from_a_dns_config() -> None:
    text = files.render_resolv_conf(DnsConfig(
        servers=["10.96.0.10", "fd00::a"], searches=["ns.svc.cluster.local", "svc.cluster.local"],
        options=["ndots:5", "timeout:2"]))
    assert text.splitlines()[1:] == [
        "search ns.svc.cluster.local svc.cluster.local",
        "nameserver 10.96.0.10",
        "nameserver fd00::a",
        "options ndots:5 timeout:2",
    ]


def test_at_most_six_search_domains_are_kept_without_duplicates() -> None:
    searches = ["a.example", "b.example", "a.example"] + [f"d{i}.example" for i in range(6)]
    text = files.render_resolv_conf(DnsConfig(searches=searches))
    assert "search a.example b.example d0.example d1.example d2.example d3.example\n" in text


@pytest.mark.parametrize("dns, message", [
    (DnsConfig(servers=["dns.example"]), "invalid DNS server 'dns.example'"),
    (DnsConfig(searches=["a b"]), "invalid DNS search domain"),
    (DnsConfig(options=["nd ots"]), "invalid DNS option"),
])
def test_bad_dns_values_are_rejected(dns: DnsConfig, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        files.render_resolv_conf(dns)


def test_hosts_has_the_loopback_names_and_the_pod_ips() -> None:
    lines = files.render_hosts("web-0", ["10.88.0.5", "fd00::5"]).splitlines()
    assert "127.0.0.1\tlocalhost" in lines
    assert "::1\tlocalhost ip6-localhost ip6-loopback" in lines
    assert lines[-2:] == ["10.88.0.5\tweb-0", "fd00::5\tweb-0"]
    with pytest.raises(InvalidArgument, match="pod IP"):
        files.render_hosts("web-0", ["bogus"])


@pytest.mark.parametrize("hostname", ["", "a b", "x" * 65, "a\nb"])
def test_bad_hostnames_are_rejected(hostname: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid hostname"):
        files.render_hostname(hostname)


def test_write_pod_files_writes_the_three_files(tmp_path: Path) -> None:
    directory = tmp_path / "pod"
    written = files.write_pod_files(directory, "web-0", "10.88.0.5",
                                    DnsConfig(["10.96.0.10"], ["svc.local"], ["ndots:5"]))
    assert written == {"/etc/hostname": directory / "hostname", "/etc/hosts": directory / "hosts",
                       "/etc/resolv.conf": directory / "resolv.conf"}
    assert (directory / "hostname").read_text() == "web-0\n"
    assert "10.88.0.5\tweb-0" in (directory / "hosts").read_text()
    assert "nameserver 10.96.0.10" in (directory / "resolv.conf").read_text()
    assert sorted(os.listdir(directory)) == ["hostname", "hosts", "resolv.conf"]  # no temporary files left
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in written.values())


def test_without_a_dns_config_the_hosts_resolv_conf_is_copied(tmp_path: Path) -> None:
    host_resolv = tmp_path / "host-resolv.conf"
    host_resolv.write_text("nameserver 192.0.2.53\nsearch host.example\n")
    for dns in (None, DnsConfig()):
        written = files.write_pod_files(tmp_path / "pod", "web-0", "", dns, host_resolv_conf=host_resolv)
        assert written["/etc/resolv.conf"].read_text() == host_resolv.read_text()
    missing = files.write_pod_files(tmp_path / "pod2", "web-0", [], None, host_resolv_conf=tmp_path / "none")
    assert missing["/etc/resolv.conf"].read_text() == ""


def test_a_host_network_pod_gets_the_hosts_file_of_the_host(tmp_path: Path) -> None:
    host_hosts = tmp_path / "hosts"
    host_hosts.write_text("127.0.0.1 localhost\n192.0.2.1 node-1\n")
    written = files.write_pod_files(tmp_path / "pod", "node-1", "", None, host_network=True, host_hosts=host_hosts)
    assert written["/etc/hosts"].read_text() == host_hosts.read_text()


def test_write_atomic_replaces_and_leaves_no_temporary_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f"
    files.write_atomic(target, "one\n")
    files.write_atomic(target, b"two\n", mode=0o600)
    assert target.read_text() == "two\n" and oct(target.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FileNotFoundError):
        files.write_atomic(tmp_path / "no-dir" / "f", "x")
    with pytest.raises(TypeError):
        files.write_atomic(target, 42)  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path)) == ["f"] and target.read_text() == "two\n"
