"""CRI ContainerConfig -> OCI spec: kubelet's command rules, env, capabilities, user, namespaces, mounts."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.common.errors import InvalidArgument, Unimplemented
from pycri.containers.users import resolve
from pycri.containers.oci_config import Cpu, Memory, Namespace, User
from pycri.criserver import oci_spec

IMAGE = {"Entrypoint": ["/entry"], "Cmd": ["default"], "Env": ["PATH=/bin", "A=image"], "WorkingDir": "/w"}


@pytest.mark.parametrize("command,args,expected", [
    ([], [], ["/entry", "default"]),
    (["/cmd"], [], ["/cmd"]),
    (["/cmd"], ["x"], ["/cmd", "x"]),
    ([], ["x", "y"], ["/entry", "x", "y"]),
])
def test_command_rules(command: list[str], args: list[str], expected: list[str]) -> None:
    assert oci_spec.command_line(cri.ContainerConfig(command=command, args=args), IMAGE) == expected


def test_no_command_at_all() -> None:
    with pytest.raises(InvalidArgument, match="no command"):
        oci_spec.command_line(cri.ContainerConfig(), {})


def test_env_overrides_image() -> None:
    config = cri.ContainerConfig(envs=[cri.KeyValue(key="A", value=b"cri"), cri.KeyValue(key="B", value=b"b")])
    assert oci_spec.environment(config, IMAGE) == ["PATH=/bin", "A=cri", "B=b"]
    assert oci_spec.environment(cri.ContainerConfig(), {})[0].startswith("PATH=/usr/local/sbin")


def caps(add: list[str] = [], drop: list[str] = [], privileged: bool = False) -> list[str]:
    security = cri.LinuxContainerSecurityContext(
        capabilities=cri.Capability(add_capabilities=add, drop_capabilities=drop), privileged=privileged)
    return oci_spec.capabilities(security)


def test_capabilities() -> None:
    assert caps() == oci_spec.DEFAULT_CAPABILITIES
    assert "CAP_SYS_ADMIN" in caps(add=["SYS_ADMIN"]) and "CAP_CHOWN" not in caps(drop=["CHOWN"])
    assert caps(add=["ALL"]) == list(oci_spec.host_capabilities())
    assert caps(drop=["ALL"]) == []
    assert caps(drop=["ALL"], add=["NET_ADMIN"]) == ["CAP_NET_ADMIN"]
    assert caps(add=["ALL"], drop=["KILL"]) == [c for c in oci_spec.host_capabilities() if c != "CAP_KILL"]
    assert caps(privileged=True) == list(oci_spec.host_capabilities())
    assert set(oci_spec.DEFAULT_CAPABILITIES) <= set(oci_spec.host_capabilities()) <= set(oci_spec.ALL_CAPABILITIES)
    with pytest.raises(InvalidArgument, match="unknown capability"):
        caps(add=["FLY"])


@pytest.fixture
def layers(tmp_path: Path) -> list[Path]:
    base, top = tmp_path / "base", tmp_path / "top"
    (base / "etc").mkdir(parents=True)
    (top / "etc").mkdir(parents=True)
    (base / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nold:x:5:5::/:/bin/sh\n")
    (top / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n")
    (top / "etc/group").write_text("root:x:0:\nweb:x:33:\nextra:x:500:web,other\n")
    return [base, top]


def test_users_from_the_top_layer(layers: list[Path]) -> None:
    assert resolve(layers, "web").uid == 33
    assert resolve(layers, "web").additional_gids == (33, 500)
    with pytest.raises(InvalidArgument, match="not found"):
        resolve(layers, "old")  # only the lower layer has it
    assert resolve(layers, "1003:1004") == resolve(layers, "", 1003, 1004)
    assert resolve(layers, "web:extra").gid == 500
    assert resolve(layers, "", 33, None, (7,)).additional_gids == (33, 500, 7)
    if os.geteuid() != 0:
        return  # a whiteout is a 0:0 character device (images.unpack), which needs CAP_MKNOD
    (layers[1] / "etc/group").unlink()
    os.mknod(layers[1] / "etc/group", stat.S_IFCHR | 0o600, 0)
    (layers[0] / "etc/group").write_text("g:x:9:web\n")
    assert resolve(layers, "web").additional_gids == (33,)  # the whiteout hides the lower group file


def pod(**overrides: object) -> oci_spec.PodContext:
    values: dict = dict(id="p", hostname="pod-host", cgroup_parent="/pycri/p",
                        namespaces={"network": "/run/ns/net", "ipc": "/run/ns/ipc", "uts": "/run/ns/uts"},
                        files={"/etc/hosts": "/pod/hosts"})
    values.update(overrides)
    return oci_spec.PodContext(**values)


def test_spec(layers: list[Path], tmp_path: Path) -> None:
    config = cri.ContainerConfig(
        command=["sh"], envs=[cri.KeyValue(key="X", value=b"1")],
        mounts=[cri.Mount(container_path="/data", host_path=str(tmp_path), readonly=True,
                          propagation=cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER)],
        linux=cri.LinuxContainerConfig(
            resources=cri.LinuxContainerResources(cpu_quota=50000, cpu_period=100000, memory_limit_in_bytes=1 << 26),
            security_context=cri.LinuxContainerSecurityContext(run_as_username="web", readonly_rootfs=True)),
    )
    spec = oci_spec.build_spec(config, {"config": IMAGE}, layers, pod(), "c1", {"a": "b"})
    assert spec.process.user == User(uid=33, gid=33, additional_gids=[33, 500])
    assert spec.process.cwd == "/w" and spec.root.readonly is True
    assert "hostname" not in spec.to_dict()  # the pod's UTS namespace has it
    assert Namespace("network", "/run/ns/net") in spec.linux.namespaces
    assert Namespace("pid") in spec.linux.namespaces and Namespace("mount") in spec.linux.namespaces
    assert spec.linux.resources.cpu == Cpu(quota=50000, period=100000)
    assert spec.linux.resources.memory == Memory(limit=1 << 26)
    assert spec.linux.cgroups_path == "/pycri/p/c1"
    mounts = {m.destination: m for m in spec.mounts}
    assert mounts["/data"].options == ["rbind", "ro", "rslave"]
    assert mounts["/etc/hosts"].source == "/pod/hosts"
    assert "/proc/kcore" in spec.linux.masked_paths


def test_bad_mounts(layers: list[Path]) -> None:
    for mount, message in [(cri.Mount(container_path="rel", host_path="/"), "absolute"),
                           (cri.Mount(container_path="/x", host_path="/no/such/path"), "does not exist")]:
        with pytest.raises(InvalidArgument, match=message):
            oci_spec.build_spec(cri.ContainerConfig(command=["sh"], mounts=[mount]), {}, layers, pod(), "c", {})


def test_oom_score_adj_is_clamped_where_it_cannot_be_set(layers: list[Path]) -> None:
    config = cri.ContainerConfig(command=["sh"], linux=cri.LinuxContainerConfig(
        resources=cri.LinuxContainerResources(oom_score_adj=-997)))
    assert oci_spec.build_spec(config, {}, layers, pod(min_oom_score_adj=0), "c", {}).process.oom_score_adj == 0
    assert oci_spec.build_spec(config, {}, layers, pod(), "c", {}).process.oom_score_adj == -997
    assert -1000 <= oci_spec.lowest_oom_score_adj() <= 1000


def test_supplemental_groups_policy(layers: list[Path]) -> None:
    """Merge (the default) adds the user's groups from the image's /etc/group; Strict does not."""
    def groups(policy: int) -> User:
        security = cri.LinuxContainerSecurityContext(run_as_user=cri.Int64Value(value=33), supplemental_groups=[1234],
                                                     supplemental_groups_policy=policy)
        config = cri.ContainerConfig(command=["sh"], linux=cri.LinuxContainerConfig(security_context=security))
        return oci_spec.build_spec(config, {}, layers, pod(), "c", {}).process.user

    assert groups(cri.SupplementalGroupsPolicy.Merge) == User(uid=33, gid=33, additional_gids=[33, 500, 1234])
    assert groups(cri.SupplementalGroupsPolicy.Strict) == User(uid=33, gid=33, additional_gids=[33, 1234])
    with pytest.raises(InvalidArgument, match="supplemental_groups_policy"):
        groups(7)


def rro_mount(path: Path, **fields: object) -> cri.Mount:
    values: dict = dict(container_path="/mnt", host_path=str(path), readonly=True, recursive_read_only=True)
    values.update(fields)
    return cri.Mount(**values)


def test_recursive_read_only_mounts(layers: list[Path], tmp_path: Path) -> None:
    def options(mount: cri.Mount, supported: bool = True) -> list[str]:
        config = cri.ContainerConfig(command=["sh"], mounts=[mount])
        spec = oci_spec.build_spec(config, {}, layers, pod(recursive_read_only=supported), "c", {})
        return next(m.options for m in spec.mounts if m.destination == "/mnt")

    assert options(rro_mount(tmp_path)) == ["rbind", "rro", "rprivate"]
    assert options(rro_mount(tmp_path, recursive_read_only=False)) == ["rbind", "ro", "rprivate"]
    with pytest.raises(InvalidArgument, match="needs readonly"):
        options(rro_mount(tmp_path, readonly=False))
    for propagation in (cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER,
                        cri.MountPropagation.PROPAGATION_BIDIRECTIONAL):
        with pytest.raises(InvalidArgument, match="needs PROPAGATION_PRIVATE"):
            options(rro_mount(tmp_path, propagation=propagation))
    with pytest.raises(Unimplemented, match="does not support recursive read-only"):
        options(rro_mount(tmp_path), supported=False)


@pytest.mark.parametrize("v2", [True, False])
@pytest.mark.parametrize("privileged", [True, False])
def test_a_cgroup_namespace_on_cgroup_v2_unless_privileged(layers: list[Path], monkeypatch: pytest.MonkeyPatch,
                                                           v2: bool, privileged: bool) -> None:
    # containerd's CRI and CRI-O: a cgroup namespace of its own on v2, the host's on v1 and when privileged
    monkeypatch.setattr(oci_spec, "cgroup_v2", lambda: v2)
    config = cri.ContainerConfig(command=["sh"], linux=cri.LinuxContainerConfig(
        security_context=cri.LinuxContainerSecurityContext(privileged=privileged)))
    namespaces = oci_spec.build_spec(config, {}, layers, pod(), "c", {}).linux.namespaces
    assert (Namespace("cgroup") in namespaces) == (v2 and not privileged)
    assert [ns for ns in namespaces if ns.type == "cgroup"] in ([], [Namespace("cgroup")])
