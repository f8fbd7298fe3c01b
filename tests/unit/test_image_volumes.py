"""Image volumes (KEP-4639): the CRI Mount's checks and OCI mount, the sub path inside the
image, the read-only overlay, and an image kept while a container mounts it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.common.errors import FailedPrecondition, InvalidArgument, NotFound
from pycri.containers import image_volumes
from pycri.containers.image_volumes import ImageVolume, ImageVolumeError
from pycri.containers.oci_config import Mount
from pycri.criserver import oci_spec
from pycri.images.config import RegistryConfig
from pycri.images.service import ImageService
from pycri.images.records import ImageRecord
from pycri.kernel.fake import RecordingSyscall
from pycri.kernel.syscall import MS_NODEV, MS_NOSUID, MS_RDONLY
from pycri.store.db import Database

IMAGE_ID = "sha256:" + "ab" * 32


def image_mount(**fields: object) -> cri.Mount:
    values: dict = dict(container_path="/mnt/vol", readonly=True, image=cri.ImageSpec(image=IMAGE_ID))
    values.update(fields)
    return cri.Mount(**values)


def pod(**overrides: object) -> oci_spec.PodContext:
    values: dict = dict(id="p", hostname="h", cgroup_parent="/pycri/p", namespaces={})
    values.update(overrides)
    return oci_spec.PodContext(**values)


def spec_mount(mount: cri.Mount, **pod_overrides: object) -> Mount:
    spec = oci_spec.build_spec(cri.ContainerConfig(command=["sh"], mounts=[mount]), {}, [], pod(**pod_overrides), "c", {})
    return next(m for m in spec.mounts if m.destination == mount.container_path)


# -- criserver: the CRI Mount -----------------------------------------------------


@pytest.mark.parametrize("sub_path,expected", [
    ("", ""), (".", ""), ("etc", "etc"), ("./etc/", "etc"), ("usr//share/./doc", "usr/share/doc"),
])
def test_sub_path_is_normalised(sub_path: str, expected: str) -> None:
    assert oci_spec.image_sub_path(image_mount(image_sub_path=sub_path)) == expected


@pytest.mark.parametrize("sub_path", ["/etc", "..", "../etc", "etc/../..", "a/../b", "etc\0x"])
def test_sub_path_must_stay_in_the_image(sub_path: str) -> None:
    with pytest.raises(InvalidArgument, match="^ImageVolumeMountFailed: .*relative path without"):
        oci_spec.image_sub_path(image_mount(image_sub_path=sub_path))


def test_oci_mount_of_an_image_volume() -> None:
    """A read-only bind whose source the container service fills in; nosuid, nodev, no noexec."""
    assert spec_mount(image_mount()) == Mount("/mnt/vol", "bind", "", ["rbind", "ro", "nosuid", "nodev", "rprivate"])
    mount = spec_mount(image_mount(recursive_read_only=True), recursive_read_only=True)
    assert mount.options == ["rbind", "rro", "nosuid", "nodev", "rprivate"]
    mount = spec_mount(image_mount(propagation=cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER))
    assert mount.options[-1] == "rslave"
    assert oci_spec.is_image_mount(image_mount()) and not oci_spec.is_image_mount(cri.Mount(host_path="/x"))
    assert not oci_spec.is_image_mount(cri.Mount(host_path="/x", image=cri.ImageSpec()))


@pytest.mark.parametrize("fields,message", [
    ({"readonly": False}, "image volumes are read-only"),
    ({"host_path": "/tmp"}, "host_path must be empty"),
    ({"container_path": "mnt"}, "not absolute"),
    ({"container_path": ""}, "not absolute"),
    ({"image_sub_path": "../x"}, "without '..'"),
])
def test_bad_image_volumes(fields: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^ImageVolumeMountFailed: .*{message}"):
        spec_mount(image_mount(**fields))


def test_sub_path_needs_an_image(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="image_sub_path is only for image volumes"):
        spec_mount(cri.Mount(container_path="/mnt/vol", host_path=str(tmp_path), image_sub_path="etc"))


# -- containers: the overlay and the sub path -------------------------------------


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """What a mounted image looks like, with symlinks that try to lead out of it."""
    root = tmp_path / "image"
    (root / "etc/ssl").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\n")
    (root / "usr/share").mkdir(parents=True)
    (root / "link-abs").symlink_to("/etc")  # absolute: the image's /etc, not the host's
    (root / "link-up").symlink_to("../../../..")  # stops at the image's root
    (root / "usr/share/link-rel").symlink_to("../../etc/ssl")
    (root / "to-passwd").symlink_to("etc/passwd")
    (root / "loop").symlink_to("loop")
    return root


@pytest.mark.parametrize("sub_path,expected", [
    ("", "."), ("etc", "etc"), ("etc/ssl", "etc/ssl"), ("link-abs", "etc"), ("link-abs/ssl", "etc/ssl"),
    ("link-up", "."), ("link-up/etc", "etc"), ("usr/share/link-rel", "etc/ssl"),
])
def test_sub_directory_resolves_inside_the_image(image_root: Path, sub_path: str, expected: str) -> None:
    resolved = image_volumes.sub_directory(image_root, sub_path, IMAGE_ID)
    assert resolved == (image_root / expected if expected != "." else image_root)
    assert os.path.realpath(resolved) == str(resolved)  # no symlink left for the runtime to follow


@pytest.mark.parametrize("sub_path,error,message", [
    ("not-existing", NotFound, "does not exist in image"),
    ("etc/passwd/x", NotFound, "does not exist in image"),
    ("etc/passwd", InvalidArgument, "is not a directory"),
    ("to-passwd", InvalidArgument, "is not a directory"),
    ("loop", InvalidArgument, "symbolic links"),
])
def test_sub_directory_errors(image_root: Path, sub_path: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        image_volumes.sub_directory(image_root, sub_path, IMAGE_ID)
    assert isinstance(caught.value, ImageVolumeError)


def test_mount_makes_one_read_only_overlay_per_image(tmp_path: Path) -> None:
    syscall = RecordingSyscall()
    layers = [tmp_path / "l0", tmp_path / "l1"]
    other = "sha256:" + "cd" * 32
    sources = image_volumes.mount(syscall, [
        ImageVolume("/a", IMAGE_ID, layers),
        ImageVolume("/b", IMAGE_ID, layers, sub_path=""),
        ImageVolume("/c", other, [tmp_path / "l2"]),
    ], tmp_path / "vols")
    root = tmp_path / "vols" / ("ab" * 32)
    assert sources == {"/a": str(root), "/b": str(root), "/c": str(tmp_path / "vols" / ("cd" * 32))}
    mounts = [args for name, args in syscall.calls if name == "mount"]
    assert len(mounts) == 2  # the same image once
    # lower dirs only, top first, and an empty one at the bottom: read-only, even with one layer
    assert mounts[0] == ("overlay", str(root), "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV,
                         f"lowerdir={tmp_path}/l1:{tmp_path}/l0:{tmp_path}/vols/.empty")
    assert mounts[1][4] == f"lowerdir={tmp_path}/l2:{tmp_path}/vols/.empty"
    assert (tmp_path / "vols/.empty").is_dir() and not os.listdir(tmp_path / "vols/.empty")


def test_mount_refuses_two_volumes_at_one_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="two image volumes"):
        image_volumes.mount(RecordingSyscall(), [ImageVolume("/a", IMAGE_ID), ImageVolume("/a", IMAGE_ID)], tmp_path)


def test_too_many_layers() -> None:
    with pytest.raises(InvalidArgument, match="too many layers"):
        image_volumes.overlay_options([Path("/var/lib/pycri/images/layers") / ("0" * 64) / "diff"] * 60)


def test_bind_sources_fills_only_the_image_volumes() -> None:
    mounts = [Mount("/proc", "proc", "proc", []), Mount("/a", "bind", "", ["rbind", "ro"]),
              Mount("/h", "bind", "/host", ["rbind"])]
    filled = image_volumes.bind_sources(mounts, {"/a": "/vols/x/etc", "/h": "/elsewhere"})
    assert filled[0] == mounts[0] and filled[2] == mounts[2]
    assert filled[1] == Mount("/a", "bind", "/vols/x/etc", ["rbind", "ro"]) and mounts[1].source == ""


def test_unmount_all_without_volumes(tmp_path: Path) -> None:
    syscall = RecordingSyscall()
    image_volumes.unmount_all(syscall, tmp_path / "absent")
    (tmp_path / "vols" / ".empty").mkdir(parents=True)
    (tmp_path / "vols" / ("ab" * 32)).mkdir()
    image_volumes.unmount_all(syscall, tmp_path / "vols")  # nothing mounted there
    # umount(2) is asked (it answers EINVAL for what is not mounted); nothing else is done
    assert {name for name, _ in syscall.calls} == {"umount"}
    assert (tmp_path / "vols" / ".empty").is_dir() and (tmp_path / "vols" / ("ab" * 32)).is_dir()


# -- images: an image in use is kept ----------------------------------------------


@pytest.fixture
def images(tmp_path: Path) -> ImageService:
    service = ImageService(Database(tmp_path / "db.sqlite"), tmp_path / "images", RegistryConfig())
    with service.db.transaction() as tx:
        service.table.add(tx, ImageRecord(id=IMAGE_ID, manifest_digest="sha256:" + "ef" * 32, size=1, config={},
                                          pulled_at=1, repo_tags=["docker.io/library/vol:1"]), {}, [])
    return service


def test_remove_refuses_an_image_a_container_mounts(images: ImageService) -> None:
    users = {IMAGE_ID: ["c1"]}
    with pytest.raises(FailedPrecondition, match="in use by c1"):
        images.remove("vol:1", lambda image_id: users.get(image_id, []))
    assert images.resolve("vol:1") is not None
    users.clear()
    images.remove("vol:1", lambda image_id: users.get(image_id, []))
    assert images.resolve("vol:1") is None


def test_holding_keeps_an_image_until_its_user_is_recorded(images: ImageService) -> None:
    with images.holding(["vol:1", "vol:1", "absent:1"]) as records:
        assert [r.id if r else None for r in records] == [IMAGE_ID, IMAGE_ID, None]
        with pytest.raises(FailedPrecondition, match="a container being created"):
            images.remove(IMAGE_ID)
    images.remove(IMAGE_ID)
    assert images.resolve(IMAGE_ID) is None

