"""The CNI client: configuration loading and validation, what each plugin is given (stdin, env,
runtimeConfig, CNI_ARGS), result parsing of every version, and the ADD/DEL/CHECK sequences with
small recording plugins (real processes, no kernel involved)."""
from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pycri.common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, Unavailable
from pycri.sandbox import cni, default_network
from pycri.sandbox.cni_network import CniNetwork
from pycri.sandbox.files import DnsConfig

CID = "a" * 64

# A test plugin: logs what it was given, answers per its config ("fail", "sleep", "result").
RECORDER = """#!{python}
import json, os, sys, time
conf = json.load(sys.stdin)
command = os.environ["CNI_COMMAND"]
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open(conf["log"], "a") as f:
    f.write(json.dumps({{"type": conf["type"], "command": command, "env": env, "conf": conf}}) + "\\n")
if command in conf.get("sleep", {{}}):
    time.sleep(conf["sleep"][command])
if command in conf.get("fail", []):
    if conf.get("plain_failure"):
        sys.stderr.write("something broke\\n")
        sys.exit(3)
    print(json.dumps({{"cniVersion": conf["cniVersion"], "code": 7, "msg": "bad config", "details": "no luck"}}))
    sys.exit(1)
if command == "ADD":
    result = conf.get("result") or conf.get("prevResult")
    print(json.dumps(dict(result, cniVersion=conf["cniVersion"])))
"""

RESULT_10 = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"}, {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
                   {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/x"}],
    "ips": [{"address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
            {"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2},
            {"address": "10.1.0.1/16", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
    "dns": {"nameservers": ["10.1.0.1"], "search": ["example.com"]},
}


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("rec-a", "rec-b", "rec-c"):
        write_plugin(bin_dir / name, RECORDER.format(python=sys.executable))
    return bin_dir


def write_plugin(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def conflist(tmp_path: Path, plugins: list[dict[str, Any]], name: str = "testnet", version: str = "1.0.0",
             **extra: Any) -> dict[str, Any]:
    log = str(tmp_path / "calls.log")
    return {"cniVersion": version, "name": name, **extra, "plugins": [{"log": log, **p} for p in plugins]}


def write_conf(conf_dir: Path, file: str, doc: dict[str, Any] | str) -> Path:
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / file
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "calls.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def client(tmp_path: Path, bin_dir: Path, timeout: float = 10.0) -> cni.CniClient:
    return cni.CniClient(tmp_path / "net.d", [str(tmp_path / "nowhere"), str(bin_dir)], tmp_path / "cache", timeout)


def attachment(**kw: Any) -> cni.Attachment:
    values: dict[str, Any] = dict(container_id=CID, netns="/proc/self/ns/net", pod_namespace="default",
                                  pod_name="web", pod_uid="uid-1")
    values.update(kw)
    return cni.Attachment(**values)


# -- configuration -------------------------------------------------------------


def test_a_conflist_parses_with_its_plugins_capabilities_and_binaries() -> None:
    network = cni.parse_network(json.dumps(default_network.default_conflist()), "x.conflist")
    assert (network.name, network.cni_version, network.source) == ("pycri", "1.0.0", "x.conflist")
    assert [p.type for p in network.plugins] == ["bridge", "portmap"]
    assert network.plugins[1].capabilities == {"portMappings"}
    assert network.binaries() == ["bridge", "host-local", "portmap"]
    assert not network.disable_check


def test_a_single_plugin_conf_is_a_list_of_one() -> None:
    network = cni.parse_network(json.dumps({"cniVersion": "0.4.0", "name": "one", "type": "bridge",
                                            "ipam": {"type": "host-local"}}))
    assert network.name == "one" and [p.type for p in network.plugins] == ["bridge"]
    assert "name" not in network.plugins[0].raw


@pytest.mark.parametrize("text, message", [
    ("{not json", "invalid JSON in f.conflist"),
    ("[]", "not a JSON object"),
    ('{"cniVersion": "1.0.0", "name": "n", "plugins": []}', "has no plugins"),
    ('{"cniVersion": "1.0.0", "name": "n"}', "neither plugins nor a type"),
    ('{"cniVersion": "1.0.0", "name": "n", "plugins": [{"bridge": "x"}]}', "invalid type None"),
    ('{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../../bin/sh"}]}', "invalid type"),
    ('{"cniVersion": "1.0.0", "name": "-bad", "plugins": [{"type": "bridge"}]}', "invalid or missing network name"),
    ('{"cniVersion": "9.9.9", "name": "n", "plugins": [{"type": "bridge"}]}', "unsupported cniVersion '9.9.9'"),
    ('{"name": "n", "plugins": [{"type": "bridge"}]}', "unsupported cniVersion None"),
    ('{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "b", "capabilities": []}]}', "capabilities"),
    ('{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "b", "ipam": {}}]}', "ipam needs a valid type"),
])
def test_bad_configurations_are_rejected_clearly(text: str, message: str) -> None:
    with pytest.raises(cni.NetworkConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        cni.parse_network(text, "f.conflist")


def test_disable_check_as_a_string_or_a_bool() -> None:
    for value in ("true", True):
        doc = {"cniVersion": "1.0.0", "name": "n", "disableCheck": value, "plugins": [{"type": "b"}]}
        assert cni.parse_network(json.dumps(doc)).disable_check


def test_the_first_valid_file_by_name_is_the_network(tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    one = {"cniVersion": "1.0.0", "name": "first", "plugins": [{"type": "bridge"}]}
    write_conf(conf_dir, "20-b.conflist", one)
    write_conf(conf_dir, "10-a.conf", {"cniVersion": "0.4.0", "name": "single", "type": "ptp"})
    write_conf(conf_dir, "05-broken.conflist", "{")
    write_conf(conf_dir, "01-ignored.txt", one)
    assert cni.load_network(conf_dir).name == "single"
    assert [p.name for p in cni.config_files(conf_dir)] == ["05-broken.conflist", "10-a.conf", "20-b.conflist"]


def test_no_configuration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(cni.NetworkConfigError, match="no CNI network configuration in"):
        cni.load_network(tmp_path / "missing")
    write_conf(tmp_path / "net.d", "10-x.conflist", "{")
    with pytest.raises(cni.NetworkConfigError, match="no valid CNI network configuration.*invalid JSON"):
        cni.load_network(tmp_path / "net.d")


def test_status_names_missing_plugins_and_missing_config(tmp_path: Path, plugins: Path) -> None:
    c = client(tmp_path, plugins)
    status = c.status()
    assert not status.ready and status.reason == "NetworkPluginNotReady" and "no CNI network" in status.message
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [
        {"type": "rec-a", "ipam": {"type": "no-such-ipam"}}, {"type": "no-such-plugin"}]))
    status = c.status()
    assert not status.ready and "no-such-ipam, no-such-plugin" in status.message and "rec-a" not in status.message
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [{"type": "rec-a"}]))
    assert c.status() == cni.NetworkStatus(True)


def test_find_plugin_takes_the_first_bin_dir_and_needs_an_executable(tmp_path: Path, plugins: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "rec-a").write_text("not executable")
    assert cni.find_plugin("rec-a", [str(other), str(plugins)]) == plugins / "rec-a"
    with pytest.raises(cni.PluginNotFound, match="CNI plugin 'nope' not found in"):
        cni.find_plugin("nope", [str(plugins)])


# -- what plugins get ----------------------------------------------------------


def test_runtime_config_only_for_declared_capabilities() -> None:
    att = attachment(port_mappings=(cni.PortMapping(8080, 80), cni.PortMapping(53, 53, "UDP", "127.0.0.1")),
                     dns=DnsConfig(["10.0.0.10"], ["svc.local"], ["ndots:5"]),
                     bandwidth=cni.Bandwidth(ingress_rate=1000, ingress_burst=2000),
                     capability_args={"ipRanges": [[{"subnet": "10.9.0.0/24"}]], "mac": ""})
    values = att.runtime_values()
    portmap = cni.PluginConfig({"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False}})
    assert cni.runtime_config(portmap, values) == {"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}]}
    everything = cni.PluginConfig({"type": "x", "capabilities": {
        "dns": True, "bandwidth": True, "ipRanges": True, "mac": True, "aliases": True}})
    assert cni.runtime_config(everything, values) == {
        "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000},
        "dns": {"servers": ["10.0.0.10"], "searches": ["svc.local"], "options": ["ndots:5"]},
        "ipRanges": [[{"subnet": "10.9.0.0/24"}]],
    }
    assert cni.runtime_config(cni.PluginConfig({"type": "bridge"}), values) == {}


def test_plugin_stdin_carries_list_name_version_prev_result_and_runtime_config() -> None:
    network = cni.parse_network(json.dumps({"cniVersion": "0.4.0", "name": "net", "plugins": [
        {"type": "bridge", "name": "ignored", "cniVersion": "0.1.0"},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}]}))
    values = attachment(port_mappings=(cni.PortMapping(1, 2),)).runtime_values()
    first = cni.plugin_stdin(network, network.plugins[0], None, values)
    assert first == {"type": "bridge", "name": "net", "cniVersion": "0.4.0"}
    second = cni.plugin_stdin(network, network.plugins[1], {"ips": []}, values)
    assert second["prevResult"] == {"ips": []} and second["snat"] is True and second["name"] == "net"
    assert second["runtimeConfig"] == {"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}]}


def test_cni_args_carry_the_pod_identity() -> None:
    assert cni.cni_args(attachment()) == (
        f"K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID={CID};K8S_POD_UID=uid-1;"
        "IgnoreUnknown=1")
    with pytest.raises(InvalidArgument, match="K8S_POD_NAME"):
        cni.cni_args(attachment(pod_name="a;b=c"))


def test_plugin_env_keeps_path_and_drops_foreign_cni_variables() -> None:
    env = cni.plugin_env("DEL", attachment(), ["/a", "/b"], "", base={"PATH": "/bin", "CNI_IFNAME": "stale"})
    assert env["PATH"] == "/bin" and env["CNI_COMMAND"] == "DEL" and env["CNI_NETNS"] == ""
    assert env["CNI_IFNAME"] == "eth0" and env["CNI_PATH"] == "/a:/b" and env["CNI_CONTAINERID"] == CID


# -- results -------------------------------------------------------------------


def test_a_1_0_result_gives_the_pod_ips_ipv4_first_without_host_side_addresses() -> None:
    result = cni.parse_result(RESULT_10)
    assert result.ips == ("10.1.0.5", "fd00::5")
    assert [i.name for i in result.interfaces] == ["cni0", "veth1", "eth0"]
    assert result.interfaces[2].sandbox == "/run/netns/x"
    assert result.ip_configs[1] == cni.IPConfig("10.1.0.5/16", "10.1.0.1", 2)
    assert result.routes == (cni.Route("0.0.0.0/0", "10.1.0.1"),)
    assert result.dns == cni.Dns(("10.1.0.1",), "", ("example.com",), ())


def test_a_0_4_result_with_ip_versions() -> None:
    raw = {"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "sandbox": "/n"}],
           "ips": [{"version": "4", "address": "10.2.0.7/24", "gateway": "10.2.0.1", "interface": 0}]}
    assert cni.parse_result(raw).ips == ("10.2.0.7",)


def test_a_0_2_result_with_ip4_and_ip6() -> None:
    raw = {"cniVersion": "0.2.0", "ip4": {"ip": "10.3.0.2/16", "gateway": "10.3.0.1",
                                          "routes": [{"dst": "0.0.0.0/0"}]},
           "ip6": {"ip": "fd01::2/64"}, "dns": {"nameservers": ["1.1.1.1"]}}
    result = cni.parse_result(raw)
    assert result.ips == ("10.3.0.2", "fd01::2")
    assert result.routes == (cni.Route("0.0.0.0/0"),)


def test_an_invalid_result_is_a_plugin_error() -> None:
    with pytest.raises(cni.CniError, match="invalid result"):
        cni.parse_result({"cniVersion": "1.0.0", "ips": [{"address": "not-an-ip"}]}, "bridge")


# -- ADD / DEL / CHECK with recording plugins ----------------------------------


def test_add_runs_plugins_in_order_chaining_prev_result(tmp_path: Path, plugins: Path) -> None:
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [
        {"type": "rec-a", "result": RESULT_10},
        {"type": "rec-b", "capabilities": {"portMappings": True}},
        {"type": "rec-c"}]))
    c = client(tmp_path, plugins)
    result = c.add(attachment(port_mappings=(cni.PortMapping(18080, 8080),)))
    assert result.ips == ("10.1.0.5", "fd00::5")
    log = calls(tmp_path)
    assert [(e["type"], e["command"]) for e in log] == [("rec-a", "ADD"), ("rec-b", "ADD"), ("rec-c", "ADD")]
    assert "prevResult" not in log[0]["conf"]
    assert log[1]["conf"]["prevResult"]["ips"] == RESULT_10["ips"]
    assert log[1]["conf"]["runtimeConfig"] == {"portMappings": [
        {"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]}
    assert "runtimeConfig" not in log[0]["conf"] and "runtimeConfig" not in log[2]["conf"]
    env = log[0]["env"]
    assert env["CNI_COMMAND"] == "ADD" and env["CNI_IFNAME"] == "eth0" and env["CNI_NETNS"] == "/proc/self/ns/net"
    assert env["CNI_PATH"] == f"{tmp_path / 'nowhere'}:{plugins}"
    assert env["CNI_ARGS"].startswith("K8S_POD_NAMESPACE=default;")
    entry = c.cached("testnet", CID)
    assert entry is not None and entry.result is not None and entry.result["ips"] == RESULT_10["ips"]


def test_del_runs_in_reverse_with_the_cached_result_even_after_a_restart(tmp_path: Path, plugins: Path) -> None:
    conf_dir = tmp_path / "net.d"
    write_conf(conf_dir, "10.conflist", conflist(tmp_path, [
        {"type": "rec-a", "result": RESULT_10}, {"type": "rec-b", "capabilities": {"portMappings": True}}]))
    client(tmp_path, plugins).add(attachment(port_mappings=(cni.PortMapping(18080, 8080),)))
    # the configuration changes (another network) and the daemon restarts
    (conf_dir / "10.conflist").unlink()
    write_conf(conf_dir, "10.conflist", conflist(tmp_path, [{"type": "rec-c"}], name="othernet"))
    restarted = client(tmp_path, plugins)
    restarted.delete(attachment(netns=str(tmp_path / "gone")))  # the namespace is gone too
    dels = [e for e in calls(tmp_path) if e["command"] == "DEL"]
    assert [e["type"] for e in dels] == ["rec-b", "rec-a"]
    assert all(e["conf"]["prevResult"]["ips"] == RESULT_10["ips"] for e in dels)
    assert dels[0]["conf"]["runtimeConfig"]["portMappings"][0]["hostPort"] == 18080
    assert all(e["conf"]["name"] == "testnet" for e in dels)
    assert dels[0]["env"]["CNI_NETNS"] == ""
    assert restarted.cached("testnet", CID) is None
    # a second DEL has no cache: it runs the configured list without prevResult, and succeeds
    restarted.delete(attachment())
    last = calls(tmp_path)[-1]
    assert last["type"] == "rec-c" and last["command"] == "DEL" and "prevResult" not in last["conf"]


def test_del_without_a_netns_takes_the_cached_one(tmp_path: Path, plugins: Path) -> None:
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [{"type": "rec-a", "result": RESULT_10}]))
    c = client(tmp_path, plugins)
    c.add(attachment(netns="/proc/self/ns/net"))
    c.delete(attachment(netns=""))
    assert calls(tmp_path)[-1]["env"]["CNI_NETNS"] == "/proc/self/ns/net"


def test_del_without_cache_or_configuration_is_a_no_op(tmp_path: Path, plugins: Path) -> None:
    client(tmp_path, plugins).delete(attachment())
    assert calls(tmp_path) == []


def test_del_stops_at_the_first_error_and_keeps_the_cache(tmp_path: Path, plugins: Path) -> None:
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [
        {"type": "rec-a", "result": RESULT_10}, {"type": "rec-b", "fail": ["DEL"]}]))
    c = client(tmp_path, plugins)
    c.add(attachment())
    with pytest.raises(cni.CniError, match=r"rec-b DEL failed \(code 7: invalid network config\): bad config"):
        c.delete(attachment())
    assert [e["type"] for e in calls(tmp_path) if e["command"] == "DEL"] == ["rec-b"]
    assert c.cached("testnet", CID) is not None


def test_a_failed_add_is_rolled_back_with_del_of_every_plugin(tmp_path: Path, plugins: Path) -> None:
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [
        {"type": "rec-a", "result": RESULT_10}, {"type": "rec-b", "fail": ["ADD"]}, {"type": "rec-c"}]))
    c = client(tmp_path, plugins)
    with pytest.raises(cni.CniError) as info:
        c.add(attachment())
    assert (info.value.plugin, info.value.command, info.value.code) == ("rec-b", "ADD", 7)
    assert (info.value.msg, info.value.details) == ("bad config", "no luck")
    assert isinstance(info.value, Unavailable)
    sequence = [(e["type"], e["command"]) for e in calls(tmp_path)]
    assert sequence == [("rec-a", "ADD"), ("rec-b", "ADD"), ("rec-c", "DEL"), ("rec-b", "DEL"), ("rec-a", "DEL")]
    assert calls(tmp_path)[-1]["conf"]["prevResult"]["ips"] == RESULT_10["ips"]
    assert c.cached("testnet", CID) is None and not list((tmp_path / "cache").iterdir())


def test_rollback_goes_on_past_failing_dels(tmp_path: Path, plugins: Path) -> None:
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [
        {"type": "rec-a", "result": RESULT_10}, {"type": "rec-b", "fail": ["ADD", "DEL"]}]))
    with pytest.raises(cni.CniError) as info:
        client(tmp_path, plugins).add(attachment())
    assert [(e["type"], e["command"]) for e in calls(tmp_path)][-2:] == [("rec-b", "DEL"), ("rec-a", "DEL")]
    assert any("rolling back" in note for note in info.value.__notes__)


def test_a_missing_plugin_fails_add_before_anything_runs(tmp_path: Path, plugins: Path) -> None:
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [
        {"type": "rec-a", "result": RESULT_10}, {"type": "pycri-no-such-plugin"}]))
    with pytest.raises(cni.PluginNotFound, match="'pycri-no-such-plugin' not found") as info:
        client(tmp_path, plugins).add(attachment())
    assert isinstance(info.value, FailedPrecondition)
    assert calls(tmp_path) == []


def test_an_error_without_an_error_object_shows_stderr(tmp_path: Path, plugins: Path) -> None:
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [
        {"type": "rec-a", "fail": ["ADD"], "plain_failure": True}]))
    with pytest.raises(cni.CniError, match="exit status 3: something broke"):
        client(tmp_path, plugins).add(attachment())


def test_a_plugin_that_hangs_is_killed_at_the_timeout(tmp_path: Path, plugins: Path) -> None:
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [
        {"type": "rec-a", "result": RESULT_10, "sleep": {"ADD": 30}}]))
    started = time.monotonic()
    with pytest.raises(cni.PluginTimeout, match=r"rec-a ADD failed: no answer in 0.5 s") as info:
        client(tmp_path, plugins, timeout=0.5).add(attachment())
    assert time.monotonic() - started < 10
    assert isinstance(info.value, DeadlineExceeded) and isinstance(info.value, cni.CniError)
    assert [e["command"] for e in calls(tmp_path)] == ["ADD", "DEL"]  # rolled back too


def test_a_plugin_printing_no_result_on_add_is_an_error(tmp_path: Path, plugins: Path) -> None:
    write_plugin(plugins / "silent", "#!/bin/sh\ncat >/dev/null\nexit 0\n")
    write_conf(tmp_path / "net.d", "10.conflist", {"cniVersion": "1.0.0", "name": "n",
                                                   "plugins": [{"type": "silent"}]})
    with pytest.raises(cni.CniError, match="silent ADD failed: it printed no result"):
        client(tmp_path, plugins).add(attachment())


def test_check_uses_the_cached_result_and_honours_disable_check(tmp_path: Path, plugins: Path) -> None:
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [
        {"type": "rec-a", "result": RESULT_10}, {"type": "rec-b"}]))
    c = client(tmp_path, plugins)
    with pytest.raises(FailedPrecondition, match="not attached"):
        c.check(attachment())
    c.add(attachment())
    c.check(attachment())
    checks = [e for e in calls(tmp_path) if e["command"] == "CHECK"]
    assert [e["type"] for e in checks] == ["rec-a", "rec-b"]
    assert checks[0]["conf"]["prevResult"]["ips"] == RESULT_10["ips"]
    c.delete(attachment())
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [
        {"type": "rec-a", "result": RESULT_10}], disableCheck=True))
    c.add(attachment())
    c.check(attachment())
    assert len([e for e in calls(tmp_path) if e["command"] == "CHECK"]) == 2


def test_attachments_are_validated(tmp_path: Path, plugins: Path) -> None:
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [{"type": "rec-a", "result": RESULT_10}]))
    c = client(tmp_path, plugins)
    for bad in (attachment(container_id="../x"), attachment(ifname="a/b"), attachment(netns="")):
        with pytest.raises(InvalidArgument):
            c.add(bad)
    assert calls(tmp_path) == []


# -- the default network and the service adapter -------------------------------


def test_the_default_network_is_written_only_into_an_empty_conf_dir(tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    path = default_network.ensure_default(conf_dir, data_dir=tmp_path / "networks")
    assert path == conf_dir / "10-pycri-bridge.conflist"
    network = cni.load_network(conf_dir)
    bridge = network.plugins[0].raw
    assert (network.name, network.cni_version) == ("pycri", "1.0.0")
    assert bridge["bridge"] == "pycri0" and bridge["isGateway"] and bridge["hairpinMode"]
    assert bridge["ipMasq"] is False  # pycri masquerades the whole subnet once (sandbox/masquerade.py)
    assert bridge["ipam"] == {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(tmp_path / "networks")}
    assert network.plugins[1].raw == {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    path.unlink()
    write_conf(conf_dir, "05-mine.conf", {"cniVersion": "1.0.0", "name": "mine", "type": "ptp"})
    assert default_network.ensure_default(conf_dir) is None
    assert sorted(os.listdir(conf_dir)) == ["05-mine.conf"]


def test_only_the_default_network_as_pycri_writes_it_is_masqueraded_by_pycri(tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    path = default_network.ensure_default(conf_dir, data_dir=tmp_path / "networks")
    assert path is not None
    assert default_network.masquerade_subnets(cni.load_network(conf_dir)) == ["10.88.0.0/16"]
    doc = json.loads(path.read_text())

    def subnets(file: str, change: Any) -> list[str]:
        other = json.loads(json.dumps(doc))
        change(other)
        return default_network.masquerade_subnets(cni.parse_network(json.dumps(other), str(conf_dir / file)))

    assert subnets("10-pycri-bridge.conflist", lambda d: None) == ["10.88.0.0/16"]
    assert subnets("10-pycri-bridge.conflist", lambda d: d.update(name="pycri-bench")) == []
    assert subnets("10-mine.conflist", lambda d: None) == []  # the same content in a file of the user's
    # a default written by an older pycri: the bridge plugin masquerades each pod
    assert subnets("10-pycri-bridge.conflist", lambda d: d["plugins"][0].update(ipMasq=True)) == []
    assert subnets("10-pycri-bridge.conflist", lambda d: d["plugins"][0].pop("ipMasq")) == []
    assert subnets("10-pycri-bridge.conflist", lambda d: d["plugins"][0].update(type="ptp")) == []
    assert subnets("10-pycri-bridge.conflist", lambda d: d["plugins"][0].update(isGateway=False)) == []
    # IPv6 ranges added by hand are not masqueraded; the IPv4 ones still are
    assert subnets("10-pycri-bridge.conflist", lambda d: d["plugins"][0]["ipam"]["ranges"].append(
        [{"subnet": "fd00:88::/64"}])) == ["10.88.0.0/16"]
    bench = default_network.default_conflist(bridge="pycribench0", subnet="10.89.0.0/16", data_dir=tmp_path)
    assert default_network.masquerade_subnets(
        cni.parse_network(json.dumps(bench), "/x/10-pycri-bridge.conflist")) == ["10.89.0.0/16"]


class RecordingMasquerade:
    """Stands for iptables behind masquerade.Runner: records each command, answers as a nat
    table where nothing exists yet (every -S and -C: 1), or fails every command."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, args: Any) -> Any:
        from pycri.sandbox.masquerade import Outcome

        self.calls.append(list(args))
        if self.fail:
            return Outcome(4, "", "iptables: broken\n")
        return Outcome(1 if args[2] in ("-S", "-C") else 0)

    def chains_made(self) -> list[str]:
        return [c[3] for c in self.calls if c[2] == "-N"]


def stub_plugins(bin_dir: Path) -> list[str]:
    """bridge, host-local and portmap that answer ADD with an address and DEL with nothing."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    result = json.dumps({"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/16"}]})
    for name in ("bridge", "host-local", "portmap"):
        write_plugin(bin_dir / name, f"#!/bin/sh\ncat > /dev/null\n[ \"$CNI_COMMAND\" = ADD ] && echo '{result}'\nexit 0\n")
    return [str(bin_dir)]


def test_cni_network_masquerades_the_default_network_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    iptables = RecordingMasquerade()
    network = CniNetwork(tmp_path / "net.d", stub_plugins(tmp_path / "bin"), tmp_path / "cni", iptables=iptables)
    assert network.status() == (True, "", "")  # writes the default network, then masquerades it
    assert iptables.chains_made() == [masquerade_chain("pycri", "10.88.0.0/16")]
    made = len(iptables.calls)
    assert network.status() == (True, "", "")
    # a pod: no iptables at all (loopback_up needs a real namespace and root: integration tests)
    monkeypatch.setattr(default_network, "loopback_up", lambda netns: None)
    pod = SimpleNamespace(id=CID, name="web", namespace="ns", uid="u")
    assert network.setup(pod, tmp_path / "netns", []) == ["10.88.0.5"]
    network.teardown(pod, tmp_path / "netns")
    assert len(iptables.calls) == made


def test_cni_network_masquerades_at_the_first_pod_and_tries_again_after_a_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(default_network, "loopback_up", lambda netns: None)
    iptables = RecordingMasquerade(fail=True)
    network = CniNetwork(tmp_path / "net.d", stub_plugins(tmp_path / "bin"), tmp_path / "cni", iptables=iptables)
    pod = SimpleNamespace(id=CID, name="web", namespace="ns", uid="u")
    assert network.setup(pod, tmp_path / "netns", []) == ["10.88.0.5"]  # the pod gets its address regardless
    assert [c[2] for c in iptables.calls] == ["-S", "-N"]  # the first failure ends it
    network.teardown(pod, tmp_path / "netns")
    iptables.fail = False
    iptables.calls.clear()
    assert network.setup(pod, tmp_path / "netns", []) == ["10.88.0.5"]
    assert iptables.chains_made() == [masquerade_chain("pycri", "10.88.0.0/16")]
    made = len(iptables.calls)
    network.status()
    network.setup(pod, tmp_path / "netns", [])
    assert len(iptables.calls) == made


@pytest.mark.parametrize("write", [
    lambda conf_dir, data: write_conf(conf_dir, "05-mine.conflist", {**default_network.default_conflist(
        data_dir=data), "name": "mine"}),  # the user's network
    lambda conf_dir, data: write_conf(conf_dir, "10-pycri-bridge.conflist", {**default_network.default_conflist(
        data_dir=data), "plugins": [{**default_network.default_conflist()["plugins"][0], "ipMasq": True}]}),
])
def test_cni_network_runs_no_iptables_for_other_networks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         write: Any) -> None:
    """A network of the user's, or a default written before (ipMasq true): left to its plugins."""
    monkeypatch.setattr(default_network, "loopback_up", lambda netns: None)
    write(tmp_path / "net.d", tmp_path / "networks")
    iptables = RecordingMasquerade()
    network = CniNetwork(tmp_path / "net.d", stub_plugins(tmp_path / "bin"), tmp_path / "cni", iptables=iptables)
    assert network.status() == (True, "", "")
    pod = SimpleNamespace(id=CID, name="web", namespace="ns", uid="u")
    assert network.setup(pod, tmp_path / "netns", []) == ["10.88.0.5"]
    assert iptables.calls == []


def masquerade_chain(name: str, subnet: str) -> str:
    from pycri.sandbox import masquerade

    return masquerade.chain_name(name, subnet)


def test_cni_network_passes_pod_identity_and_only_real_host_ports(tmp_path: Path) -> None:
    pod = SimpleNamespace(id=CID, name="web", namespace="ns", uid="u")
    ports = [SimpleNamespace(protocol="udp", container_port=53, host_port=5353, host_ip=""),
             SimpleNamespace(protocol="tcp", container_port=80, host_port=0, host_ip="")]
    att = CniNetwork.attachment(pod, Path("/run/x/net"), ports)
    assert (att.container_id, att.netns, att.pod_name, att.pod_namespace, att.pod_uid) == (
        CID, "/run/x/net", "web", "ns", "u")
    assert att.port_mappings == (cni.PortMapping(5353, 53, "udp"),)
    assert CniNetwork.attachment(pod, None, []).netns == ""


def test_cni_network_status_writes_the_default_when_asked(tmp_path: Path) -> None:
    network = CniNetwork(tmp_path / "net.d", ["/usr/lib/cni", "/opt/cni/bin"], tmp_path / "cni", write_default=False)
    ready, reason, message = network.status()
    assert not ready and reason == "NetworkPluginNotReady" and "no CNI network configuration" in message
    network = CniNetwork(tmp_path / "net.d", [str(tmp_path / "empty")], tmp_path / "cni", write_default=True)
    ready, reason, message = network.status()
    assert (tmp_path / "net.d" / "10-pycri-bridge.conflist").exists()
    assert not ready and "bridge, host-local, portmap" in message


def test_the_cache_is_fsynced_before_the_plugins_run_and_not_for_the_result(
        tmp_path: Path, plugins: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [{"type": "rec-a", "result": RESULT_10}]))
    c = client(tmp_path, plugins)
    events: list[str] = []
    real_fsync, real_exec = os.fsync, cni.exec_plugin
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(cni, "exec_plugin", lambda *a: (events.append("plugin"), real_exec(*a))[1])
    c.add(attachment())
    assert events == ["fsync", "plugin"]  # the entry that names the network is durable first
    entry = c.cached("testnet", CID)
    assert entry is not None and entry.result is not None and entry.result["ips"] == RESULT_10["ips"]


def test_a_chained_portmap_without_port_mappings_is_not_run(tmp_path: Path, plugins: Path) -> None:
    write_plugin(plugins / "portmap", RECORDER.format(python=sys.executable))
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [
        {"type": "rec-a", "result": RESULT_10}, {"type": "portmap", "capabilities": {"portMappings": True}}]))
    c = client(tmp_path, plugins)
    result = c.add(attachment())  # no host ports: portmap would print its prevResult as it came
    assert result.ips == ("10.1.0.5", "fd00::5")
    assert c.cached("testnet", CID).result["ips"] == RESULT_10["ips"]
    c.check(attachment())
    c.delete(attachment())  # ... and do nothing on DEL and CHECK
    assert [(e["type"], e["command"]) for e in calls(tmp_path)] == [("rec-a", "ADD"), ("rec-a", "CHECK"),
                                                                   ("rec-a", "DEL")]
    (tmp_path / "calls.log").unlink()
    mapped = attachment(port_mappings=(cni.PortMapping(18080, 8080),))
    c.add(mapped)
    c.delete(mapped)
    assert [(e["type"], e["command"]) for e in calls(tmp_path)] == [
        ("rec-a", "ADD"), ("portmap", "ADD"), ("portmap", "DEL"), ("rec-a", "DEL")]


def test_a_portmap_first_in_its_list_still_runs(tmp_path: Path, plugins: Path) -> None:
    write_plugin(plugins / "portmap", RECORDER.format(python=sys.executable))
    write_conf(tmp_path / "net.d", "10.conflist", conflist(tmp_path, [
        {"type": "portmap", "capabilities": {"portMappings": True}, "result": RESULT_10}]))
    client(tmp_path, plugins).add(attachment())
    assert [(e["type"], e["command"]) for e in calls(tmp_path)] == [("portmap", "ADD")]
