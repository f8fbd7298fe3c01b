"""What a CRI request may carry before pycri stores or builds anything from it.

Pure functions: each raises `InvalidArgument` naming the field, and nothing else.

Names (pod name, namespace and uid, container name) end up in cgroup paths, annotations, log
lines and conmon's arguments, so they must not be able to step out of anything built from them:
no "/", no "..", no NUL or other control character, not empty, at most 253 bytes (the longest
name kubelet sends is a DNS-1123 subdomain of 253; namespaces and container names are DNS-1123
labels of 63, uids 36-character UUIDs; crictl and other clients may send anything).

Sizes: every pod and container is stored and sent back in ListPodSandbox/ListContainers, whose
reply must stay under gRPC's 16 MiB, so what one object may store is bounded:

- annotations: 320 KiB of keys and values together. The API server caps a pod's annotations
  at 256 KiB (TotalAnnotationSizeLimitB); kubelet passes them as the sandbox's annotations and
  adds a few small ones of its own (config.seen/source, a container's hash, ports, preStop
  handler), hence 64 KiB of slack.
- labels: 256 KiB of keys and values. Kubernetes bounds each label (key 317 bytes, value 63),
  not their number; 256 KiB is some 700 labels of the largest size, far past any real pod.
- at most 16384 labels and annotations together (protobuf and JSON add bytes per entry).
- the image name 4096 bytes (a reference is at most 255 + 128 + a digest), the log path and
  directory and the cgroup parent 4096 bytes (PATH_MAX), the hostname 64 bytes in the pod's own
  UTS namespace (HOST_NAME_MAX; kubelet truncates pod hostnames to 63), 253 otherwise.

Paths: `log_directory` is empty or absolute (kubelet: /var/log/pods/<ns>_<name>_<uid>);
`log_path` is relative to it and may not step out of it (kubelet: <container>/<attempt>.log):
not absolute, no ".." component, not the directory itself. A cgroup parent has no ".."
component. None may hold NUL.
"""
from __future__ import annotations

import posixpath
from collections.abc import Mapping

from pycri.api.cri import api_pb2 as cri
from pycri.cgroups import systemd as systemd_cgroups
from pycri.common.errors import InvalidArgument

MAX_NAME_BYTES = 253
MAX_LABEL_BYTES = 256 * 1024
MAX_ANNOTATION_BYTES = 320 * 1024
MAX_ENTRIES = 16384
MAX_IMAGE_BYTES = 4096
MAX_PATH_BYTES = 4096
MAX_HOSTNAME_BYTES = 253  # a node's name (a host-network pod's hostname is not set anywhere)
MAX_UTS_HOSTNAME_BYTES = 64  # HOST_NAME_MAX: what the kernel takes in a pod's own UTS namespace


def _size(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))


def _control(value: str) -> str | None:
    """The first control character (C0, DEL or C1) in `value`, or None."""
    for ch in value:
        if ch < " " or "\x7f" <= ch <= "\x9f":
            return ch
    return None


def name(value: str, field: str) -> None:
    """A name something on the host is derived from."""
    if not value:
        raise InvalidArgument(f"{field} is required")
    if _size(value) > MAX_NAME_BYTES:
        raise InvalidArgument(f"{field} is longer than {MAX_NAME_BYTES} bytes")
    if "/" in value:
        raise InvalidArgument(f"{field} {value!r} must not contain '/'")
    if ".." in value:
        raise InvalidArgument(f"{field} {value!r} must not contain '..'")
    if value == ".":
        raise InvalidArgument(f"{field} must not be '.'")
    bad = _control(value)
    if bad is not None:
        raise InvalidArgument(f"{field} {value!r} must not contain the control character {bad!r}")


def _path_chars(value: str, field: str) -> None:
    if _size(value) > MAX_PATH_BYTES:
        raise InvalidArgument(f"{field} is longer than {MAX_PATH_BYTES} bytes")
    if "\0" in value:
        raise InvalidArgument(f"{field} {value!r} must not contain NUL")


def log_directory(value: str, field: str = "config.log_directory") -> None:
    """Empty (no logs) or an absolute host directory."""
    if not value:
        return
    _path_chars(value, field)
    if not value.startswith("/"):
        raise InvalidArgument(f"{field} {value!r} must be an absolute path")


def log_path(value: str, field: str = "config.log_path") -> None:
    """Empty, or a file relative to the pod's log directory that stays inside it."""
    if not value:
        return
    _path_chars(value, field)
    if value.startswith("/"):
        raise InvalidArgument(f"{field} {value!r} must be relative to the pod's log_directory")
    if ".." in value.split("/"):
        raise InvalidArgument(f"{field} {value!r} must not contain a '..' component")
    if value.endswith("/") or posixpath.normpath(value) in (".", ""):
        raise InvalidArgument(f"{field} {value!r} does not name a file")
    bad = _control(value)
    if bad is not None:
        raise InvalidArgument(f"{field} {value!r} must not contain the control character {bad!r}")


def cgroup_parent(value: str, field: str = "config.linux.cgroup_parent", driver: str = "cgroupfs") -> None:
    """cgroupfs: a path without a ".." component; systemd: a slice name as systemd and runc take it
    (kubepods-besteffort-pod<uid>.slice: ends in .slice, no "/", no empty part between dashes) or
    the expanded path of one, which is what kubelet sends."""
    if not value:
        return
    _path_chars(value, field)
    if driver == "systemd":
        if systemd_cgroups.pod_slice(value) is None:
            raise InvalidArgument(f"{field} {value!r} is not a systemd slice (the systemd cgroup driver takes "
                                  "one such as kubepods-besteffort-pod<uid>.slice, or kubelet's path of it, "
                                  "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice)")
        return
    if ".." in value.split("/"):
        raise InvalidArgument(f"{field} {value!r} must not contain a '..' component")


def hostname(value: str, field: str = "config.hostname", own_uts: bool = False) -> None:
    """`own_uts`: set in the pod's own UTS namespace (kubelet truncates pod hostnames to 63)."""
    limit = MAX_UTS_HOSTNAME_BYTES if own_uts else MAX_HOSTNAME_BYTES
    if _size(value) > limit:
        raise InvalidArgument(f"{field} is longer than {limit} bytes")
    bad = _control(value)
    if bad is not None or "/" in value:
        raise InvalidArgument(f"{field} {value!r} must not contain {bad or '/'!r}")


def image(value: str, field: str = "config.image.image") -> None:
    if _size(value) > MAX_IMAGE_BYTES:
        raise InvalidArgument(f"{field} is longer than {MAX_IMAGE_BYTES} bytes")
    if "\0" in value:
        raise InvalidArgument(f"{field} must not contain NUL")


def string_maps(labels: Mapping[str, str], annotations: Mapping[str, str], field: str = "config") -> None:
    """The labels and annotations one pod or container stores."""
    if len(labels) + len(annotations) > MAX_ENTRIES:
        raise InvalidArgument(f"{field}.labels and {field}.annotations have {len(labels) + len(annotations)} "
                              f"entries, more than {MAX_ENTRIES}")
    for what, entries, limit in (("labels", labels, MAX_LABEL_BYTES),
                                 ("annotations", annotations, MAX_ANNOTATION_BYTES)):
        total = 0
        for key, value in entries.items():
            total += _size(key) + _size(value)
            if total > limit:
                raise InvalidArgument(f"{field}.{what} are larger than {limit // 1024} KiB (keys and values)")


def pod_sandbox_config(config: cri.PodSandboxConfig, cgroup_driver: str = "cgroupfs") -> None:
    """Everything of RunPodSandbox's config pycri stores or derives host names and paths from."""
    metadata = config.metadata
    name(metadata.name, "config.metadata.name")
    name(metadata.namespace, "config.metadata.namespace")
    name(metadata.uid, "config.metadata.uid")
    hostname(config.hostname, own_uts=config.linux.security_context.namespace_options.network != cri.NamespaceMode.NODE)
    log_directory(config.log_directory)
    cgroup_parent(config.linux.cgroup_parent, driver=cgroup_driver)
    string_maps(config.labels, config.annotations)


def container_config(config: cri.ContainerConfig) -> None:
    """Everything of CreateContainer's config pycri stores, echoes in lists or builds paths from."""
    name(config.metadata.name, "config.metadata.name")
    if not config.image.image:
        raise InvalidArgument("config.image.image is required")
    image(config.image.image)
    log_path(config.log_path)
    string_maps(config.labels, config.annotations)
