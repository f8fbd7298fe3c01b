"""Pod user namespaces: the CRI checks, the OCI spec, the runtime's order of namespace calls
(with the recording fake), and the idmapped rootfs layers."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.common.errors import InvalidArgument
from pycri.containers import oci_config, rootfs
from pycri.criserver import oci_spec, userns
from pycri.kernel.fake import RecordingSyscall
from pycri.kernel.syscall import AT_RECURSIVE, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE
from pycri.runtime import init, stages
from pycri.runtime.spec import parse_spec
from pycri.runtime.sync import channel_pair
from pycri.sandbox.namespaces import IdMapping, IdMaps

POD, NODE = cri.NamespaceMode.POD, cri.NamespaceMode.NODE


def mapping(container: int = 0, host: int = 1000, length: int = 100000) -> cri.IDMapping:
    return cri.IDMapping(container_id=container, host_id=host, length=length)


def options(mode: int, uids: list[cri.IDMapping] | None = None, gids: list[cri.IDMapping] | None = None,
            **modes: int) -> cri.NamespaceOption:
    return cri.NamespaceOption(userns_options=cri.UserNamespace(mode=mode, uids=uids or [], gids=gids or []), **modes)


def test_node_mode_is_no_user_namespace() -> None:
    assert userns.id_maps(cri.NamespaceOption()) is None
    assert userns.id_maps(options(NODE)) is None
    assert userns.to_cri(None) == cri.UserNamespace(mode=NODE)


def test_pod_mode_gives_the_mappings_and_reports_them_back() -> None:
    maps = userns.id_maps(options(POD, [mapping()], [mapping(host=2000)]))
    assert maps == IdMaps((IdMapping(0, 1000, 100000),), (IdMapping(0, 2000, 100000),))
    assert userns.to_cri(maps) == cri.UserNamespace(mode=POD, uids=[mapping()], gids=[mapping(host=2000)])
    assert maps is not None and userns.oci_mappings(maps) == (
        [oci_config.IdMapping(container_id=0, host_id=1000, size=100000)],
        [oci_config.IdMapping(container_id=0, host_id=2000, size=100000)],
    )


@pytest.mark.parametrize(("option", "message"), [
    (options(POD, [mapping(), mapping(host=200000)], [mapping()]), "exactly one uid mapping, got 2"),
    (options(POD, [mapping()], []), "exactly one gid mapping, got 0"),
    (options(POD, [mapping(container=1)], [mapping(container=1)]), "must map container id 0"),
    (options(POD, [mapping(length=0)], [mapping()]), "out of range"),
    (options(POD, [mapping(host=(1 << 32) - 10)], [mapping()]), "out of range"),
    (options(cri.NamespaceMode.CONTAINER), "mode CONTAINER is not supported"),
    (options(cri.NamespaceMode.TARGET), "mode TARGET is not supported"),
    (options(NODE, [mapping()], [mapping()]), "NODE takes no uid or gid mappings"),
    (options(POD, [mapping()], [mapping()], network=NODE), "host's network namespace"),
    (options(POD, [mapping()], [mapping()], pid=NODE), "host's pid namespace"),
])
def test_bad_user_namespace_options_are_refused(option: cri.NamespaceOption, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        userns.id_maps(option)


def test_the_spec_joins_the_pods_user_namespace_first_with_its_mappings() -> None:
    maps = IdMaps((IdMapping(0, 1000, 65536),), (IdMapping(0, 1000, 65536),))
    pod = oci_spec.PodContext(id="p", hostname="h", cgroup_parent="/pycri/p", userns=maps,
                              namespaces={"user": "/run/ns/p/user", "network": "/run/ns/p/net"})
    config = cri.ContainerConfig(metadata=cri.ContainerMetadata(name="c"), command=["true"])
    spec = oci_spec.build_spec(config, {"config": {}}, [], pod, "c", {}).to_dict()
    assert spec["linux"]["namespaces"][:3] == [
        {"type": "mount"}, {"type": "user", "path": "/run/ns/p/user"}, {"type": "network", "path": "/run/ns/p/net"}]
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 65536}]
    plain = oci_spec.build_spec(config, {"config": {}}, [], oci_spec.PodContext(
        id="p", hostname="h", cgroup_parent="/pycri/p", namespaces={}), "c", {})
    assert plain.linux.uid_mappings is None and all(ns.type != "user" for ns in plain.linux.namespaces)


def runtime_spec(tmp_path: Path, namespaces: list[dict[str, str]], **linux: Any) -> Any:
    data = {"ociVersion": "1.1.0", "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"}, "linux": {"namespaces": namespaces, **linux}}
    return parse_spec(data, str(tmp_path))


def test_a_joined_user_namespace_comes_first_then_root_then_the_new_namespaces(tmp_path: Path) -> None:
    (tmp_path / "user").touch()
    (tmp_path / "net").touch()
    spec = runtime_spec(tmp_path, [{"type": "mount"}, {"type": "pid"}, {"type": "network", "path": str(tmp_path / "net")},
                                   {"type": "user", "path": str(tmp_path / "user")}],
                        uidMappings=[{"containerID": 0, "hostID": 1000, "size": 10}],
                        gidMappings=[{"containerID": 0, "hostID": 1000, "size": 10}])
    kernel = RecordingSyscall()
    to_parent, _ = channel_pair()
    from_parent, _ = channel_pair()
    init.enter_namespaces(kernel, spec, to_parent, from_parent)
    calls = [(name, args[1] if name == "setns" else args) for name, args in kernel.calls]
    assert calls == [("setns", CLONE_NEWUSER), ("setns", 0x40000000), ("setresgid", (0, 0, 0)),
                     ("setresuid", (0, 0, 0)), ("unshare", (CLONE_NEWNS | CLONE_NEWPID,))]


def test_a_new_user_namespace_is_mapped_by_the_parent_before_the_other_namespaces(tmp_path: Path) -> None:
    """Stage 1 unshares the user namespace alone, asks for its maps and waits; the parent
    writes them (here: into a fake /proc) and says "mapped"; only then root and the rest."""
    spec = runtime_spec(tmp_path, [{"type": "mount"}, {"type": "user"}],
                        uidMappings=[{"containerID": 0, "hostID": 1000, "size": 10}],
                        gidMappings=[{"containerID": 0, "hostID": 2000, "size": 10}])
    kernel = RecordingSyscall()
    parent_reader, child_writer = channel_pair()
    child_reader, parent_writer = channel_pair()
    seen: list[str] = []

    class Replying(type(child_writer)):  # the parent's side, played in the same process
        def send(self, kind: str, **data: object) -> None:
            seen.append(kind)
            assert kernel.names() == ["unshare"]  # only the user namespace so far
            proc = tmp_path / "proc"
            (proc / str(data["pid"])).mkdir(parents=True)
            stages.write_id_maps(int(str(data["pid"])), "0 1000 10\n", "0 2000 10\n", proc=str(proc))
            parent_writer.send("mapped")

    init.enter_namespaces(kernel, spec, Replying(child_writer.fd), child_reader)
    assert seen == ["userns"]
    assert [(n, a) for n, a in kernel.calls] == [
        ("unshare", (CLONE_NEWUSER,)), ("setresgid", (0, 0, 0)), ("setresuid", (0, 0, 0)), ("unshare", (CLONE_NEWNS,))]
    assert (tmp_path / "proc" / str(os.getpid()) / "gid_map").read_text() == "0 2000 10\n"
    for channel in (parent_reader, parent_writer, child_reader):
        channel.close()


def test_idmapped_layers_are_mounted_detached_and_the_upper_dir_belongs_to_the_pods_root(tmp_path: Path) -> None:
    layers = [tmp_path / "l0", tmp_path / "l1"]
    for layer in layers:
        layer.mkdir()
    userns_file = tmp_path / "userns"
    userns_file.touch()
    kernel = RecordingSyscall()
    uid, gid = os.getuid(), os.getgid()  # chown to ourselves works unprivileged too
    merged = rootfs.mount(kernel, layers, tmp_path / "rootfs", rootfs.IdMap(str(userns_file), uid, gid))
    names = kernel.names()
    # the temporary idmapped mounts are detached once the overlay holds them
    assert names == ["open_tree", "set_mount_idmap", "move_mount"] * 2 + ["mount", "umount", "umount"]
    assert kernel.calls[0] == ("open_tree", (str(layers[0]), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE))
    idmap_dir = tmp_path / "rootfs" / "idmap"
    assert kernel.calls[2][1][1] == str(idmap_dir / "0")
    assert sorted(args[0] for name, args in kernel.calls if name == "umount") == [str(idmap_dir / "0"),
                                                                                  str(idmap_dir / "1")]
    _, (source, target, fstype, _, data) = kernel.calls[names.index("mount")]
    assert (target, fstype) == (str(merged), "overlay")
    assert data.startswith(f"lowerdir={idmap_dir / '1'}:{idmap_dir / '0'},upperdir=")
    assert not idmap_dir.exists()  # the temporary mount points are gone once the overlay holds the layers
    assert (os.stat(tmp_path / "rootfs" / "upper").st_uid, os.stat(tmp_path / "rootfs" / "upper").st_gid) == (uid, gid)
