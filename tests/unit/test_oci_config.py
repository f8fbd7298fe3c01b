"""The typed OCI config (containers/oci_config.py): the specs oci_spec builds for a spread of
CRI configs give exactly the config.json the dict-patching builder gave (frozen in
oci_config_expected.json, made by that builder), and read back to equal objects."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.containers import oci_config
from pycri.containers.oci_config import Cpu, DeviceRule, HugepageLimit, Memory, Resources, Spec
from pycri.criserver import oci_spec, seccomp
from pycri.sandbox.namespaces import IdMapping, IdMaps

EXPECTED = Path(__file__).with_name("oci_config_expected.json")
RUNTIME_DEFAULT = "<the runtime/default profile for the bounding capabilities>"
# what the host-dependent parts of the builder give here, whatever the machine
HOST_CAPABILITIES = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_SYS_ADMIN", "CAP_NET_ADMIN")
HOST_DEVICES = [
    {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666, "uid": 0, "gid": 0},
    {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0, "fileMode": 0o660, "uid": 0, "gid": 6},
]
IMAGE = {"Entrypoint": ["/entry"], "Cmd": ["default"], "Env": ["PATH=/bin", "A=image"], "WorkingDir": "/w"}
POD_NAMESPACES = {"network": "/run/ns/net", "ipc": "/run/ns/ipc", "uts": "/run/ns/uts", "pid": "/run/ns/pid"}


def pod(**overrides: Any) -> Any:
    values: dict[str, Any] = dict(id="p", hostname="pod-host", cgroup_parent="/pycri/p", namespaces=POD_NAMESPACES,
                                  files={"/etc/hosts": "/pod/hosts", "/etc/resolv.conf": "/pod/resolv.conf"})
    values.update(overrides)
    return oci_spec.PodContext(**values)


def security(**fields: Any) -> cri.LinuxContainerConfig:
    return cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(**fields))


def sh(**fields: Any) -> cri.ContainerConfig:
    return cri.ContainerConfig(command=["sh"], **fields)


def userns_pod() -> Any:
    maps = IdMaps((IdMapping(0, 100000, 65536),), (IdMapping(0, 200000, 65536),))
    return pod(userns=maps, namespaces={"user": "/run/ns/user", **POD_NAMESPACES})


def localhost_profile(tmp_path: Path) -> str:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                                   "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}))
    return str(profile)


# name -> (config, image, pod, hugetlb available, cgroup v2)
Case = tuple[cri.ContainerConfig, dict[str, Any], Any, bool, bool]


def cases(tmp_path: Path) -> dict[str, Case]:
    return {
        "minimal": (sh(), {}, pod(), True, True),
        "image_command_user_env": (
            cri.ContainerConfig(envs=[cri.KeyValue(key="X", value=b"1"), cri.KeyValue(key="A", value=b"cri")],
                                tty=True, working_dir="/work"),
            {"config": {**IMAGE, "User": "web"}}, pod(), True, True),
        "run_as_user_and_groups": (
            sh(linux=security(run_as_user=cri.Int64Value(value=33), run_as_group=cri.Int64Value(value=44),
                              supplemental_groups=[1234], readonly_rootfs=True, no_new_privs=True)),
            {}, pod(), True, True),
        "privileged": (
            sh(linux=security(privileged=True, seccomp_profile_path="runtime/default"),
               devices=[cri.Device(container_path="/dev/mine", host_path="/dev/zero", permissions="rw")]),
            {}, pod(), True, True),
        "user_namespace": (sh(), {}, userns_pod(), True, True),
        "devices": (
            sh(devices=[cri.Device(container_path="/dev/n", host_path="/dev/null", permissions="r"),
                        cri.Device(host_path="/dev/zero")]),
            {}, pod(), True, True),
        "image_volumes_and_propagation": (
            sh(mounts=[cri.Mount(container_path="/vol", readonly=True, image=cri.ImageSpec(image="sha256:" + "ab" * 32),
                                 image_sub_path="sub/dir"),
                       cri.Mount(container_path="/shared", host_path="/usr",
                                 propagation=cri.MountPropagation.PROPAGATION_BIDIRECTIONAL),
                       cri.Mount(container_path="/slave", host_path="/etc", readonly=True,
                                 propagation=cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER),
                       cri.Mount(container_path="/etc/hosts", host_path="/etc/hostname")]),
            {}, pod(), True, True),
        "host_to_container_propagation_and_rro": (
            sh(mounts=[cri.Mount(container_path="/ro", host_path="/usr", readonly=True, recursive_read_only=True),
                       cri.Mount(container_path="/slave", host_path="/etc",
                                 propagation=cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER)]),
            {}, pod(recursive_read_only=True, shm="/pod/shm"), True, True),
        "resources": (
            sh(linux=cri.LinuxContainerConfig(resources=cri.LinuxContainerResources(
                cpu_shares=512, cpu_quota=50000, cpu_period=100000, cpuset_cpus="0-1", cpuset_mems="0",
                memory_limit_in_bytes=1 << 26, memory_swap_limit_in_bytes=1 << 27, oom_score_adj=-997,
                hugepage_limits=[cri.HugepageLimit(page_size="2MB", limit=1 << 21),
                                 cri.HugepageLimit(page_size="1GB", limit=0)],
                unified={"memory.high": "50000000", "pids.max": "100"}))),
            {}, pod(min_oom_score_adj=-500), True, True),
        "resources_without_hugetlb_on_cgroup_v1": (
            sh(linux=cri.LinuxContainerConfig(resources=cri.LinuxContainerResources(
                memory_limit_in_bytes=1 << 30, oom_score_adj=100,
                hugepage_limits=[cri.HugepageLimit(page_size="2MB", limit=1 << 21)]))),
            {}, pod(), False, False),
        "seccomp_runtime_default": (
            sh(linux=security(seccomp=cri.SecurityProfile(profile_type=cri.SecurityProfile.ProfileType.RuntimeDefault),
                              capabilities=cri.Capability(add_capabilities=["SYS_ADMIN"]))),
            {}, pod(), True, True),
        "seccomp_localhost": (
            sh(linux=security(seccomp=cri.SecurityProfile(profile_type=cri.SecurityProfile.ProfileType.Localhost,
                                                          localhost_ref=localhost_profile(tmp_path)))),
            {}, pod(), True, True),
        "seccomp_unconfined_legacy": (sh(linux=security(seccomp_profile_path="unconfined")), {}, pod(), True, True),
        "capabilities_ambient_and_paths": (
            sh(linux=security(capabilities=cri.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["KILL"],
                                                          add_ambient_capabilities=["NET_ADMIN"]),
                              masked_paths=["/proc/x"], readonly_paths=["/proc/y", "/proc/z"])),
            {}, pod(), True, True),
        "sysctls": (sh(), {}, pod(sysctls={"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}), True, True),
        "host_namespaces": (
            sh(linux=security(namespace_options=cri.NamespaceOption(pid=cri.NamespaceMode.NODE))),
            {}, pod(namespaces={}, host_pid=True), True, True),
        "pod_pid_namespace": (
            sh(linux=security(namespace_options=cri.NamespaceOption(pid=cri.NamespaceMode.POD))),
            {}, pod(), True, True),
    }


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str], Spec]:
    """build_spec for a case, with the host's capabilities, devices and cgroups fixed."""
    monkeypatch.setattr(oci_spec, "host_capabilities", lambda: HOST_CAPABILITIES)
    monkeypatch.setattr(oci_spec, "_host_devices", lambda: [oci_config.Device.from_dict(d) for d in HOST_DEVICES])
    layers = passwd_layers(tmp_path)
    table = cases(tmp_path)

    def build(name: str) -> Spec:
        config, image, pod_context, hugetlb, v2 = table[name]
        monkeypatch.setattr(oci_spec, "_hugetlb_available", lambda: hugetlb)
        monkeypatch.setattr(oci_spec, "cgroup_v2", lambda: v2)
        return oci_spec.build_spec(config, image, layers, pod_context, f"{name}-id", {"case": name})

    return build


def passwd_layers(tmp_path: Path) -> list[Path]:
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n")
    (layer / "etc/group").write_text("root:x:0:\nweb:x:33:\nextra:x:500:web\n")
    return [layer]


def expected(name: str) -> dict[str, Any]:
    spec = json.loads(EXPECTED.read_text())[name]
    if spec["linux"].get("seccomp") == RUNTIME_DEFAULT:
        spec["linux"]["seccomp"] = seccomp.default_profile(spec["process"]["capabilities"]["bounding"])
    return spec


CASE_NAMES = [
    "minimal", "image_command_user_env", "run_as_user_and_groups", "privileged", "user_namespace", "devices",
    "image_volumes_and_propagation", "host_to_container_propagation_and_rro", "resources",
    "resources_without_hugetlb_on_cgroup_v1", "seccomp_runtime_default", "seccomp_localhost",
    "seccomp_unconfined_legacy", "capabilities_ambient_and_paths", "sysctls", "host_namespaces", "pod_pid_namespace",
]


def test_the_table_covers_every_case(tmp_path: Path) -> None:
    assert list(cases(tmp_path)) == CASE_NAMES == list(json.loads(EXPECTED.read_text()))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_the_typed_spec_gives_the_config_json_the_dict_builder_gave(built: Callable[[str], Spec], name: str) -> None:
    spec = built(name).to_dict()
    want = expected(name)
    assert spec == want
    for data in (spec, want):  # a protobuf map (CRI's unified) iterates in no fixed order
        resources = data["linux"]["resources"]
        if "unified" in resources:
            resources["unified"] = dict(sorted(resources["unified"].items()))
    assert json.dumps(spec) == json.dumps(want)  # the same key order too: the same config.json


@pytest.mark.parametrize("name", CASE_NAMES)
def test_a_spec_reads_back_equal(built: Callable[[str], Spec], name: str) -> None:
    spec = built(name)
    assert Spec.from_dict(spec.to_dict()) == spec
    assert Spec.from_dict(json.loads(json.dumps(spec.to_dict()))).to_dict() == spec.to_dict()


def test_to_dict_gives_fresh_values(built: Callable[[str], Spec]) -> None:
    spec = built("sysctls")
    data = spec.to_dict()
    data["linux"]["sysctl"]["x"] = "y"
    data["process"]["env"].append("Y=1")
    assert "x" not in spec.linux.sysctl and "Y=1" not in spec.process.env


@pytest.mark.parametrize("data,message", [
    ([], "Spec must be an object"),
    ({"ociVersion": "1.1.0"}, "'process' is missing"),
    ({"hostname": "h"}, "unknown key 'hostname'"),
])
def test_from_dict_refuses_what_pycri_does_not_write(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Spec.from_dict(data)


def test_from_dict_checks_types() -> None:
    with pytest.raises(ValueError, match=r"Resources.cpu.shares must be of type int"):
        Resources.from_dict({"cpu": {"shares": True}})
    with pytest.raises(ValueError, match=r"Resources.devices\[0\].allow must be of type bool"):
        Resources.from_dict({"devices": [{"allow": 1}]})
    with pytest.raises(ValueError, match=r"Resources.unified must be an object"):
        Resources.from_dict({"unified": []})


def test_resources_merge_as_update_container_resources_did() -> None:
    current = Resources(devices=[DeviceRule(False, access="rwm")], cpu=Cpu(shares=2, quota=1000, period=100000),
                        memory=Memory(limit=1 << 20), hugepage_limits=[HugepageLimit("2MB", 0)],
                        unified={"a": "1", "b": "2"})
    update = Resources(cpu=Cpu(quota=2000, cpus="1"), unified={"b": "3"}, hugepage_limits=[HugepageLimit("1GB", 1)])
    assert current.merged(update) == Resources(
        devices=[DeviceRule(False, access="rwm")], cpu=Cpu(shares=2, quota=2000, period=100000, cpus="1"),
        memory=Memory(limit=1 << 20), hugepage_limits=[HugepageLimit("1GB", 1)], unified={"a": "1", "b": "3"})
    assert Resources().merged(update) == update
    assert current.merged(Resources()) == current
    # the dict merge it replaces
    old = current.to_dict()
    for key, value in update.to_dict().items():
        old[key] = {**old.get(key, {}), **value} if isinstance(value, dict) else value
    assert current.merged(update).to_dict() == old
