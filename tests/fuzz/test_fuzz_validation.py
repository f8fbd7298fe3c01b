"""criserver.validation under random input: what passes is safe to build paths from, and the
only thing it ever raises is InvalidArgument."""
from __future__ import annotations

import posixpath

from hypothesis import example, given, strategies as st

from pycri.common.errors import InvalidArgument
from pycri.criserver import validation

# text biased towards the characters that matter: separators, dots, NUL and other controls
PATHY = st.text(alphabet=st.sampled_from(["/", ".", "\0", "\n", "\x7f", "\x85", "a", "b", "-", "_", "é", " "]),
                max_size=40)
ANY_TEXT = st.text(max_size=300)
NAMES = st.one_of(PATHY, ANY_TEXT)


@given(NAMES)
@example("..")
@example("a/../b")
@example("n" * 254)
@example("\udcff")
def test_a_name_that_passes_cannot_step_anywhere(value: str) -> None:
    try:
        validation.name(value, "config.metadata.name")
    except InvalidArgument as exc:
        assert "config.metadata.name" in str(exc)
        return
    assert value and "/" not in value and ".." not in value and "\0" not in value and value != "."
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)
    assert len(value.encode("utf-8", "surrogatepass")) <= validation.MAX_NAME_BYTES
    # what pycri builds from it stays below its parent
    built = posixpath.normpath(f"/pycri/pod/0123456789ab-{value}-0-1")
    assert built.startswith("/pycri/pod/")


@given(NAMES)
@example("/etc/passwd")
@example("a/../../b")
@example("./.")
def test_a_log_path_that_passes_stays_in_the_log_directory(value: str) -> None:
    try:
        validation.log_path(value)
    except InvalidArgument as exc:
        assert "config.log_path" in str(exc)
        return
    if value:
        joined = posixpath.normpath(posixpath.join("/var/log/pods/ns_pod_uid", value))
        assert joined.startswith("/var/log/pods/ns_pod_uid/")
        assert "\0" not in value and ".." not in value.split("/")


@given(NAMES)
def test_log_directory_and_cgroup_parent_only_raise_invalid_argument(value: str) -> None:
    for check in (validation.log_directory, validation.cgroup_parent, validation.hostname, validation.image):
        try:
            check(value)
        except InvalidArgument:
            continue
        assert "\0" not in value, check.__name__
    try:
        validation.cgroup_parent(value)
    except InvalidArgument:
        return
    assert ".." not in value.split("/")


@given(st.dictionaries(ANY_TEXT, st.text(max_size=2000), max_size=30),
       st.dictionaries(ANY_TEXT, st.text(max_size=2000), max_size=30),
       st.integers(min_value=0, max_value=400_000))
def test_labels_and_annotations_are_bounded(labels: dict[str, str], annotations: dict[str, str], pad: int) -> None:
    annotations = {**annotations, "pad": "p" * pad}
    try:
        validation.string_maps(labels, annotations)
    except InvalidArgument as exc:
        assert "config." in str(exc)
        return
    size = sum(len(k.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass"))
               for k, v in annotations.items())
    assert size <= validation.MAX_ANNOTATION_BYTES
