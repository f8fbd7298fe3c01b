"""kernel.passwd: the one parser of /etc/passwd and /etc/group text (the daemon's image users,
containers.users; the runtime's HOME, runtime.process.user)."""
from __future__ import annotations

from pycri.kernel.passwd import GroupEntry, PasswdEntry, home_of, parse_group, parse_passwd

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
web:x:33:33::/var/www:/bin/sh
nohome:x:7:7:::/bin/sh
nul:x:8:8::/a\0b:/bin/sh
short:x:9:9::/home/short
letters:x:abc:1::/x:/bin/sh
gidword:x:10:staff::/x:/bin/sh
superscript:x:²:1::/x:/bin/sh
long:x:000000000000000000001:1::/x:/bin/sh
padded:x:00000000000000000011:11::/padded:/bin/sh
web2:x:33:33::/second:/bin/sh
# comment
"""

GROUP = """\
root:x:0:
wheel:x:10:root,web,,
big:x:99999999999999999999:web
bad:x:x1:web
short:x:12
"""


def test_well_formed_passwd_lines() -> None:
    assert parse_passwd(PASSWD) == [
        PasswdEntry("root", 0, 0, "/root"),
        PasswdEntry("web", 33, 33, "/var/www"),
        PasswdEntry("nohome", 7, 7, "/"),
        PasswdEntry("nul", 8, 8, "/"),
        PasswdEntry("padded", 11, 11, "/padded"),
        PasswdEntry("web2", 33, 33, "/second"),
    ]


def test_well_formed_group_lines() -> None:
    """Ids are parsed, not range-checked: 99999999999999999999 is for common.ids.check_id to refuse."""
    assert parse_group(GROUP) == [
        GroupEntry("root", 0, []),
        GroupEntry("wheel", 10, ["root", "web"]),
        GroupEntry("big", 99999999999999999999, ["web"]),
    ]


def test_home_is_the_first_entrys() -> None:
    entries = parse_passwd(PASSWD)
    assert home_of(entries, 33) == "/var/www"
    assert home_of(entries, 0) == "/root"
    assert home_of(entries, 7) == "/"
    assert home_of(entries, 9) == "/"  # a line without its shell field is not an entry
    assert home_of(entries, 5) == "/"
    assert home_of([], 0) == "/"


def test_empty_and_garbage() -> None:
    assert parse_passwd("") == [] and parse_group("") == []
    assert parse_passwd("x" * 1000 + "\n::::::\n:x:1:1:::\n") == [PasswdEntry("", 1, 1, "/")]
