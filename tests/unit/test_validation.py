"""criserver.validation: what RunPodSandbox and CreateContainer refuse, and what they keep accepting."""
from __future__ import annotations

import pytest

from pycri.api.cri import api_pb2 as cri
from pycri.cgroups.paths import resolve_path
from pycri.common.errors import InvalidArgument
from pycri.criserver import validation


def kubelet_pod(**extra: object) -> cri.PodSandboxConfig:
    """A sandbox config as kubelet sends it."""
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name="coredns-5d78c9869d-x7k2p", namespace="kube-system",
                                        uid="0b8f1a4e-9c3d-4f5e-8a7b-6c5d4e3f2a1b", attempt=0),
        hostname="coredns-5d78c9869d-x7k2p", log_directory="/var/log/pods/kube-system_coredns_0b8f1a4e",
        labels={"io.kubernetes.pod.name": "coredns", "app.kubernetes.io/name": "coredns", "k8s-app": "kube-dns"},
        annotations={"kubernetes.io/config.seen": "2024-01-01T00:00:00Z", "kubernetes.io/config.source": "api"},
        linux=cri.LinuxPodSandboxConfig(cgroup_parent="/kubepods/burstable/pod0b8f1a4e"),
    )
    for key, value in extra.items():
        setattr(config, key, value)
    return config


def kubelet_container() -> cri.ContainerConfig:
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="coredns", attempt=3), image=cri.ImageSpec(image="sha256:" + "a" * 64),
        log_path="coredns/3.log", labels={"io.kubernetes.container.name": "coredns"},
        annotations={"io.kubernetes.container.hash": "1234abcd", "io.kubernetes.container.restartCount": "3"},
    )


def test_kubelet_requests_pass() -> None:
    validation.pod_sandbox_config(kubelet_pod())
    validation.container_config(kubelet_container())


def test_a_pod_at_the_kubernetes_limits_passes() -> None:
    """256 KiB of annotations (the API server's cap) plus kubelet's, and many full-size labels."""
    pod = kubelet_pod()
    pod.annotations["kubectl.kubernetes.io/last-applied-configuration"] = "x" * (256 * 1024 - 100)
    for i in range(300):
        pod.labels[f"example.com/{'k' * 40}{i:03}"] = "v" * 63
    validation.pod_sandbox_config(pod)


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "/", "x..y", "a\0b", "a\nb", "a\x7fb", "a\x85b",
                                 "n" * 254])
@pytest.mark.parametrize("field", ["name", "namespace", "uid"])
def test_bad_pod_names_are_refused(bad: str, field: str) -> None:
    pod = kubelet_pod()
    setattr(pod.metadata, field, bad)
    with pytest.raises(InvalidArgument, match=f"config.metadata.{field}"):
        validation.pod_sandbox_config(pod)


@pytest.mark.parametrize("bad", ["", "../../../../x", "a/b", "..", "a\0", "\t", "c" * 254])
def test_bad_container_names_are_refused(bad: str) -> None:
    config = kubelet_container()
    config.metadata.name = bad
    with pytest.raises(InvalidArgument, match="config.metadata.name"):
        validation.container_config(config)


@pytest.mark.parametrize("good", ["coredns/0.log", "a.log", "x/y/z.log", "./a.log", "a..b.log"])
def test_log_paths_inside_the_directory_pass(good: str) -> None:
    validation.log_path(good)


@pytest.mark.parametrize("bad", ["/etc/cron.d/x", "../x.log", "a/../../x.log", "a/..", "..", ".", "a/", "a\0.log",
                                 "a\n.log", "p" * 4097])
def test_log_paths_that_leave_the_directory_are_refused(bad: str) -> None:
    config = kubelet_container()
    config.log_path = bad
    with pytest.raises(InvalidArgument, match="config.log_path"):
        validation.container_config(config)


@pytest.mark.parametrize("bad", ["relative/logs", "logs", "/var/log\0/x"])
def test_log_directory_must_be_absolute(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="config.log_directory"):
        validation.pod_sandbox_config(kubelet_pod(log_directory=bad))


def test_empty_log_directory_and_path_pass() -> None:
    validation.pod_sandbox_config(kubelet_pod(log_directory=""))
    config = kubelet_container()
    config.log_path = ""
    validation.container_config(config)


@pytest.mark.parametrize("bad", ["/kubepods/../..", "../escape", "/a/..", "/a\0"])
def test_cgroup_parent_cannot_climb(bad: str) -> None:
    pod = kubelet_pod()
    pod.linux.cgroup_parent = bad
    with pytest.raises(InvalidArgument, match="config.linux.cgroup_parent"):
        validation.pod_sandbox_config(pod)


@pytest.mark.parametrize("what", ["labels", "annotations"])
def test_large_labels_and_annotations_are_refused(what: str) -> None:
    pod = kubelet_pod()
    getattr(pod, what)["big"] = "x" * (9 * 1024 * 1024)
    with pytest.raises(InvalidArgument, match=f"config.{what}"):
        validation.pod_sandbox_config(pod)
    config = kubelet_container()
    getattr(config, what)["big"] = "x" * (validation.MAX_ANNOTATION_BYTES + 1)
    with pytest.raises(InvalidArgument, match=f"config.{what}"):
        validation.container_config(config)


def test_too_many_entries_are_refused() -> None:
    pod = kubelet_pod()
    for i in range(validation.MAX_ENTRIES):
        pod.annotations[f"a{i}"] = ""
    with pytest.raises(InvalidArgument, match="entries"):
        validation.pod_sandbox_config(pod)


def test_hostname_and_image_are_bounded() -> None:
    with pytest.raises(InvalidArgument, match="config.hostname"):
        validation.pod_sandbox_config(kubelet_pod(hostname="h\n10.0.0.1 evil"))
    with pytest.raises(InvalidArgument, match="config.hostname is longer than 64"):
        validation.pod_sandbox_config(kubelet_pod(hostname="h" * 65))
    host_network = kubelet_pod(hostname="node-" + "n" * 100)
    host_network.linux.security_context.namespace_options.network = cri.NamespaceMode.NODE
    validation.pod_sandbox_config(host_network)
    config = kubelet_container()
    config.image.image = "i" * 5000
    with pytest.raises(InvalidArgument, match="config.image.image"):
        validation.container_config(config)


@pytest.mark.parametrize("path", ["/pycri/pod/abc-/../../../../x-0-1", "../x", "a/../b", "/a\0b"])
def test_cgroup_paths_never_climb_even_unvalidated(path: str) -> None:
    """Defence in depth: cgroups.paths refuses '..' before normalising (a container name with
    '../' once put its cgroup at the hierarchy root)."""
    with pytest.raises(ValueError, match="bad cgroup path"):
        resolve_path(path, "ctr", "/own")
