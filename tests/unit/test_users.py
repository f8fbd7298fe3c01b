"""Image users: ids in range only (ASCII digits, 0..2**32-2), in the request, the image's User
and its /etc/passwd and /etc/group; the files read inside the image's layers only
(containers.image_files), through the recording fake's openat2."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pycri.common.errors import InvalidArgument, NotFound
from pycri.common.ids import MAX_ID, parse_id
from pycri.containers import image_files, users
from pycri.containers.image_files import MAX_LOOKUPS, ImageFileInvalid, read_file
from pycri.images.service import image_user
from pycri.images.records import ImageRecord
from pycri.kernel.fake import RecordingSyscall
from pycri.kernel.syscall import RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS

PASSWD = "root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n"


@pytest.fixture
def fake() -> RecordingSyscall:
    return RecordingSyscall()


@pytest.fixture
def layers(tmp_path: Path) -> list[Path]:
    """Two layers, bottom first, each with an etc/."""
    result = [tmp_path / "l0", tmp_path / "l1"]
    for layer in result:
        (layer / "etc").mkdir(parents=True)
    return result


def resolve(fake: RecordingSyscall, layers: list[Path], *args: object, **kwargs: object) -> users.User:
    return users.resolve(layers, *args, syscall=fake, **kwargs)  # type: ignore[arg-type]


# -- ids ---------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("1000", 1000), ("0001000", 1000), (str(MAX_ID), MAX_ID),
    ("4294967295", None), ("99999999999999999999", None), ("1" * 5000, None),
    ("²", None), ("１２", None), (" 12", None), ("+5", None), ("1_000", None), ("-1", None), ("", None),
])
def test_parse_id(text: str, expected: int | None) -> None:
    assert parse_id(text) == expected


@pytest.mark.parametrize("user", ["4294967295", "99999999999999999999", "1" * 5000, "1000:4294967295",
                                  "1000:99999999999999999999", "0:4294967296"])
def test_image_user_out_of_range_is_refused(fake: RecordingSyscall, layers: list[Path], user: str) -> None:
    (layers[0] / "etc/passwd").write_text(PASSWD)
    with pytest.raises(InvalidArgument, match="not a valid id"):
        resolve(fake, layers, user)


@pytest.mark.parametrize("kwargs", [
    {"uid": -1}, {"uid": 4294967295}, {"uid": 1 << 40}, {"uid": 1, "group": -1}, {"uid": 1, "group": 4294967295},
    {"uid": 1, "supplemental": (5, 4294967295)}, {"uid": 1, "supplemental": (-3,)},
])
def test_request_ids_out_of_range_are_refused(fake: RecordingSyscall, layers: list[Path], kwargs: dict) -> None:
    with pytest.raises(InvalidArgument, match="not a valid id"):
        resolve(fake, layers, **kwargs)


def test_the_highest_ids_are_fine(fake: RecordingSyscall, layers: list[Path]) -> None:
    user = resolve(fake, layers, f"{MAX_ID}:{MAX_ID}", supplemental=(MAX_ID,))
    assert (user.uid, user.gid, user.additional_gids) == (MAX_ID, MAX_ID, (MAX_ID,))


@pytest.mark.parametrize("user", ["²", "１０００", "٣"])
def test_unicode_digits_are_names(fake: RecordingSyscall, layers: list[Path], user: str) -> None:
    (layers[0] / "etc/passwd").write_text(PASSWD)
    with pytest.raises(InvalidArgument, match="not found in the image's /etc/passwd"):
        resolve(fake, layers, user)
    (layers[0] / "etc/passwd").write_text(PASSWD + f"{user}:x:77:78::/:/bin/sh\n")
    assert resolve(fake, layers, user).uid == 77


def test_ids_in_the_image_files_are_checked(fake: RecordingSyscall, layers: list[Path]) -> None:
    (layers[0] / "etc/passwd").write_text(PASSWD + "evil:x:4294967295:0::/:/bin/sh\nbadgid:x:5:4294967295::/:/bin/sh\n"
                                          "uni:x:²:0::/:/bin/sh\n")
    (layers[0] / "etc/group").write_text("web:x:33:\nhuge:x:4294967295:web\nuni:x:²:web\n")
    with pytest.raises(InvalidArgument, match="evil.*uid 4294967295"):
        resolve(fake, layers, "evil")
    with pytest.raises(InvalidArgument, match="badgid.*gid 4294967295"):
        resolve(fake, layers, "badgid")
    with pytest.raises(InvalidArgument, match="not found"):
        resolve(fake, layers, "uni")  # its uid is not a number: the line is no entry
    with pytest.raises(InvalidArgument, match="huge.*gid 4294967295"):
        resolve(fake, layers, "web")  # a member of the huge group
    with pytest.raises(InvalidArgument, match="huge.*gid 4294967295"):
        resolve(fake, layers, "web:huge")
    assert resolve(fake, layers, "web", image_groups=False).additional_gids == (33,)


@pytest.mark.parametrize("user, expected", [
    ("", (None, "")), ("1000", (1000, "")), ("1000:1000", (1000, "")), ("web:web", (None, "web")),
    ("4294967295", (None, "")), ("99999999999999999999", (None, "")), ("1" * 5000, (None, "")),
    ("²", (None, "²")), (":1000", (None, "")),
])
def test_image_user_as_listed(user: str, expected: tuple[int | None, str]) -> None:
    """What ListImages/ImageStatus report: never an id out of range (no uid at all: kubelet
    takes that image for root), never an error."""
    record = ImageRecord(id="sha256:" + "a" * 64, manifest_digest="", size=0, config={"config": {"User": user}},
                         pulled_at=0)
    assert image_user(record) == expected


@pytest.mark.parametrize("config", [{"config": None}, {"config": []}, {"config": {"User": None}}, {}])
def test_image_user_of_odd_configs(config: dict) -> None:
    assert image_user(ImageRecord(id="x", manifest_digest="", size=0, config=config, pulled_at=0)) == (None, "")


# -- files read inside the image ----------------------------------------------

def test_links_resolve_inside_the_image_across_layers(fake: RecordingSyscall, layers: list[Path]) -> None:
    (layers[0] / "etc/real-passwd").write_text(PASSWD)
    (layers[0] / "data").mkdir()
    (layers[0] / "data/group").write_text("web:x:33:\nextra:x:500:web\n")
    os.symlink("/etc/real-passwd", layers[1] / "etc/passwd")  # absolute, into the layer below
    os.symlink("../../../../../../../data/group", layers[1] / "etc/group")  # relative, ".." stops at the root
    user = resolve(fake, layers, "web")
    assert (user.uid, user.additional_gids, user.home) == (33, (33, 500), "/var/www")


@pytest.mark.parametrize("target", ["/etc/hostname", "../../../../../../../../etc/hostname",
                                    "/proc/self/root/etc/hostname", "/proc/1/environ"])
def test_links_never_reach_the_host(fake: RecordingSyscall, layers: list[Path], target: str) -> None:
    """The host has these files, the image does not: the image has no such file."""
    os.symlink(target, layers[1] / "etc/passwd")
    assert read_file(fake, layers, "/etc/passwd", 1 << 20) is None


def test_a_link_to_a_host_passwd_names_no_host_user(fake: RecordingSyscall, layers: list[Path], tmp_path: Path) -> None:
    host = tmp_path / "host-passwd"
    host.write_text("hostonly:x:4242:4242::/:/bin/sh\n")
    os.symlink(str(host), layers[1] / "etc/passwd")
    os.symlink(os.path.relpath(host, layers[1] / "etc"), layers[1] / "etc/group")
    with pytest.raises(InvalidArgument, match="not found"):
        resolve(fake, layers, "hostonly")


def test_lookups_are_one_plain_name_beneath_a_directory(fake: RecordingSyscall, layers: list[Path]) -> None:
    os.symlink("../x/../../etc/./passwd", layers[1] / "etc/passwd")
    read_file(fake, layers, "/etc/passwd", 100)
    calls = [args for name, args in fake.calls if name == "openat2"]
    assert calls
    for _dirfd, path, _flags, resolve_flags, _mode in calls:
        assert "/" not in path and path != ".."
        assert resolve_flags & RESOLVE_BENEATH and resolve_flags & RESOLVE_NO_SYMLINKS


@pytest.mark.parametrize("make", [
    lambda p: os.mkfifo(p),
    lambda p: p.mkdir(),
    lambda p: os.symlink("passwd", p),  # a loop
    lambda p: (os.symlink("./other", p), os.symlink("/etc/../etc/passwd", p.parent / "other")),
])
def test_what_is_not_a_regular_file_is_refused(fake: RecordingSyscall, layers: list[Path], make: object) -> None:
    make(layers[1] / "etc/passwd")  # type: ignore[operator]
    (layers[0] / "etc/passwd").write_text(PASSWD)  # hidden
    with pytest.raises(ImageFileInvalid):
        read_file(fake, layers, "/etc/passwd", 100)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs CAP_MKNOD")
def test_a_device_is_never_opened(fake: RecordingSyscall, layers: list[Path]) -> None:
    os.mknod(layers[1] / "etc/passwd", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
    with pytest.raises(ImageFileInvalid, match="not a regular file"):
        read_file(fake, layers, "/etc/passwd", 100)
    assert not [args for name, args in fake.calls if name == "openat2" and not args[2] & os.O_PATH
                and args[1] != "."]  # "." reopens a directory (to read its opaque xattr)


def test_size_limit(fake: RecordingSyscall, layers: list[Path]) -> None:
    (layers[0] / "etc/passwd").write_text(PASSWD)
    assert read_file(fake, layers, "/etc/passwd", len(PASSWD)) == PASSWD.encode()
    with pytest.raises(ImageFileInvalid, match="more than"):
        read_file(fake, layers, "/etc/passwd", len(PASSWD) - 1)
    with open(layers[0] / "etc/passwd", "wb") as f:
        f.truncate(users.MAX_FILE_BYTES + 1)  # sparse
    with pytest.raises(InvalidArgument, match="more than"):
        resolve(fake, layers, "web")


def test_too_many_lookups(fake: RecordingSyscall, layers: list[Path]) -> None:
    (layers[0] / "a").mkdir()
    os.symlink("/a/.." * (MAX_LOOKUPS // 2 + 1) + "/etc/passwd", layers[1] / "etc/passwd")
    with pytest.raises(ImageFileInvalid, match="path components"):
        read_file(fake, layers, "/etc/passwd", 100)


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts (0:0 devices) need CAP_MKNOD, opaque xattrs CAP_SYS_ADMIN")
def test_overlay_rules(fake: RecordingSyscall, tmp_path: Path) -> None:
    base, middle, top = (tmp_path / n for n in ("base", "middle", "top"))
    layers = [base, middle, top]
    for layer in layers:
        (layer / "etc").mkdir(parents=True)
    (base / "etc/passwd").write_text("base")
    os.mknod(middle / "etc/passwd", stat.S_IFCHR, 0)  # whiteout
    assert read_file(fake, layers, "etc/passwd", 100) is None
    (top / "etc/passwd").write_text("top")
    assert read_file(fake, layers, "etc/passwd", 100) == b"top"
    (base / "d").mkdir()
    (base / "d/f").write_text("base")
    (base / "d/g").write_text("base")
    (middle / "d").mkdir()
    os.setxattr(middle / "d", image_files.OPAQUE_XATTR, b"y")
    (middle / "d/g").write_text("middle")
    assert read_file(fake, layers, "d/f", 100) is None  # hidden by the opaque directory
    assert read_file(fake, layers, "d/g", 100) == b"middle"
    (top / "x").write_text("file")
    (base / "x").mkdir()
    (base / "x/f").write_text("under")
    assert read_file(fake, layers, "x/f", 100) is None  # a file above hides the directory


def test_a_missing_layer_is_not_found(fake: RecordingSyscall, layers: list[Path], tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        read_file(fake, [*layers, tmp_path / "gone"], "/etc/passwd", 100)


def test_no_descriptor_is_left_open(fake: RecordingSyscall, layers: list[Path]) -> None:
    (layers[0] / "etc/passwd").write_text(PASSWD)
    os.symlink("/etc/../etc/./passwd", layers[1] / "etc/link")
    os.mkfifo(layers[1] / "etc/fifo")
    before = len(os.listdir("/proc/self/fd"))
    for path in ("/etc/link", "/etc/fifo", "/etc", "/nope/x", "/etc/passwd/x"):
        try:
            read_file(fake, layers, path, 1000)
        except ImageFileInvalid:
            pass
    assert len(os.listdir("/proc/self/fd")) == before
