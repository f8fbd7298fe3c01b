"""CRI RuntimeService calls for pod sandboxes and containers: validate, translate, call
the sandbox and container services, build the CRI messages."""
from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import structlog

from pycri.api.cri import api_pb2 as cri
from pycri.common.errors import FailedPrecondition, InvalidArgument, NotFound
from pycri.containers.image_volumes import ImageVolume, ImageVolumeError
from pycri.containers.service import ContainerService, NewContainer
from pycri.containers.oci_config import Spec, User
from pycri.containers.records import CREATED, EXITED, RUNNING, ContainerMount, ContainerRecord
from pycri.criserver import list_streams, oci_spec, userns, validation
from pycri.criserver.list_replies import Encoded, KeptReplies, ListReplies
from pycri.images.service import ImageService
from pycri.images.records import ImageRecord
from pycri.sandbox import files
from pycri.sandbox.service import NewSandbox, PortMapping, SandboxService, pod_namespaces
from pycri.sandbox.records import READY, SandboxRecord

log = structlog.get_logger("cri")

PROTOCOLS = {cri.Protocol.TCP: "tcp", cri.Protocol.UDP: "udp", cri.Protocol.SCTP: "sctp"}
CONTAINER_STATES = {
    CREATED: cri.ContainerState.CONTAINER_CREATED, RUNNING: cri.ContainerState.CONTAINER_RUNNING,
    EXITED: cri.ContainerState.CONTAINER_EXITED,
}


def make_missing_host_paths(mounts: Iterable[cri.Mount]) -> None:
    """A bind mount's host path that does not exist is made, as a directory (0755), as containerd
    and CRI-O do: kubelet's hostPath volumes of type "" and upstream manifests (kube-flannel's
    /run/flannel) rely on it. It stays when the create fails later, as with them. A dangling
    symlink is not followed (the mount is refused as before), nor is a relative path made."""
    for m in mounts:
        if oci_spec.is_image_mount(m) or not m.host_path or os.path.lexists(m.host_path):
            continue
        if not os.path.isabs(m.host_path) or "\0" in m.host_path:
            raise InvalidArgument(f"mount host_path {m.host_path!r} is not absolute")
        try:
            os.makedirs(m.host_path, 0o755, exist_ok=True)
        except OSError as exc:
            raise InvalidArgument(f"mount host_path {m.host_path!r} does not exist and cannot be made: "
                                  f"{exc.strerror}") from exc
        log.info("made a missing mount host path", host_path=m.host_path)


def matches_labels(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    # (an empty selector, kubelet's, asks nothing: iterating a protobuf map, even an empty
    # one, goes through Python's Mapping machinery and was a third of ListPodSandbox's time)
    return not selector or all(labels.get(k) == v for k, v in selector.items())


def _sandbox_filter(f: cri.PodSandboxFilter) -> Callable[[SandboxRecord], bool] | None:
    """ListPodSandbox's filter as a test of a record; None when it keeps every one."""
    prefix, selector = f.id, dict(f.label_selector)
    state = f.state.state if f.HasField("state") else None
    if not prefix and state is None and not selector:
        return None
    return lambda r: ((not prefix or r.id.startswith(prefix)) and (state is None or _sandbox_state(r) == state)
                      and matches_labels(r.labels, selector))


def container_filter(f: cri.ContainerFilter | cri.ContainerStatsFilter) -> Callable[[ContainerRecord], bool]:
    """ListContainers' filter but the state (which needs the state brought up to date first), or
    ListContainerStats' filter, as a test of a record."""
    prefix, pod_prefix, selector = f.id, f.pod_sandbox_id, dict(f.label_selector)
    if not prefix and not pod_prefix and not selector:
        return _everything
    return lambda r: ((not prefix or r.id.startswith(prefix)) and (not pod_prefix or r.pod_id.startswith(pod_prefix))
                      and matches_labels(r.labels, selector))


def _everything(record: Any) -> bool:
    return True


class PodCalls:
    """The RuntimeService methods for sandboxes and containers (mixed into the servicer)."""

    sandboxes: SandboxService
    containers: ContainerService
    images: ImageService
    min_oom_score_adj: int
    stream_chunk: tuple[int, int] = (list_streams.MAX_ITEMS, list_streams.MAX_BYTES)  # of a Stream* reply

    @functools.cached_property
    def container_replies(self) -> ListReplies[cri.ListContainersResponse]:
        """ListContainers' items, encoded once per state (the servicer drops a deleted one's)."""
        return ListReplies(cri.ListContainersResponse)

    @functools.cached_property
    def sandbox_replies(self) -> ListReplies[cri.ListPodSandboxResponse]:
        """ListPodSandbox's items, encoded once per state (the servicer drops a deleted one's)."""
        return ListReplies(cri.ListPodSandboxResponse)

    @functools.cached_property
    def status_replies(self) -> KeptReplies[cri.ContainerStatusResponse]:
        """ContainerStatus replies (not verbose), kept while the container's state and spec stay
        (the servicer drops a deleted one's)."""
        return KeptReplies(cri.ContainerStatusResponse)

    # -- pod sandboxes -----------------------------------------------------

    def RunPodSandbox(self, request: cri.RunPodSandboxRequest, context: Any) -> cri.RunPodSandboxResponse:
        config = request.config
        metadata = config.metadata
        if not metadata.name or not metadata.namespace or not metadata.uid:
            raise InvalidArgument("RunPodSandbox: config.metadata needs name, namespace and uid")
        validation.pod_sandbox_config(config)
        security = config.linux.security_context
        options = security.namespace_options
        dns = None
        if config.HasField("dns_config"):
            dns = files.DnsConfig(servers=list(config.dns_config.servers), searches=list(config.dns_config.searches),
                                  options=list(config.dns_config.options))
        handler = self.containers.handler_name(request.runtime_handler)
        id_maps = userns.id_maps(options)
        if id_maps is not None and not self.containers.handler(handler).features().user_namespaces:
            raise InvalidArgument(f"runtime handler {handler!r} does not support user namespaces")
        record = self.sandboxes.run(NewSandbox(
            name=metadata.name, namespace=metadata.namespace, uid=metadata.uid, attempt=metadata.attempt,
            handler=handler, hostname=config.hostname, log_directory=config.log_directory,
            dns=dns,
            port_mappings=[PortMapping(PROTOCOLS.get(p.protocol, "tcp"), p.container_port, p.host_port, p.host_ip)
                           for p in config.port_mappings],
            cgroup_parent=config.linux.cgroup_parent,
            host_network=options.network == cri.NamespaceMode.NODE,
            host_ipc=options.ipc == cri.NamespaceMode.NODE,
            host_pid=options.pid == cri.NamespaceMode.NODE,
            shared_pid=options.pid == cri.NamespaceMode.POD,
            labels=dict(config.labels), annotations=dict(config.annotations), sysctls=dict(config.linux.sysctls),
            id_maps=id_maps,
        ))
        return cri.RunPodSandboxResponse(pod_sandbox_id=record.id)

    def StopPodSandbox(self, request: cri.StopPodSandboxRequest, context: Any) -> cri.StopPodSandboxResponse:
        record = self.sandboxes.find(_required(request.pod_sandbox_id, "pod_sandbox_id"))
        if record is not None:
            for container in self.containers.list(record.id):
                self.containers.stop(container.id, 0)
            self.sandboxes.stop(record.id)
        return cri.StopPodSandboxResponse()

    def RemovePodSandbox(self, request: cri.RemovePodSandboxRequest, context: Any) -> cri.RemovePodSandboxResponse:
        record = self.sandboxes.find(_required(request.pod_sandbox_id, "pod_sandbox_id"))
        if record is not None:
            # its containers first, the leftovers of failed creates too: while one stays, so does the pod
            self.containers.remove_pod_containers(record.id)
            self.sandboxes.remove(record.id)
        return cri.RemovePodSandboxResponse()

    def UpdatePodSandboxResources(self, request: cri.UpdatePodSandboxResourcesRequest,
                                  context: Any) -> cri.UpdatePodSandboxResourcesResponse:
        """Kubelet's word on a pod's new pod-level resources, sent after it has resized the pod's
        cgroup itself (in-place resize with pod-level resources). Best effort by the CRI's own
        definition: the pod cgroup is kubelet's, and pycri has no NRI plugin to hand them to,
        so, as containerd and CRI-O without NRI, it checks that the pod exists (NotFound) and
        changes nothing."""
        record = self.sandboxes.get(_required(request.pod_sandbox_id, "pod_sandbox_id"))
        log.info("pod-level resources updated by kubelet", pod_sandbox_id=record.id,
                 memory_limit=request.resources.memory_limit_in_bytes,
                 cpu_quota=request.resources.cpu_quota, cpu_shares=request.resources.cpu_shares)
        return cri.UpdatePodSandboxResourcesResponse()

    def PodSandboxStatus(self, request: cri.PodSandboxStatusRequest, context: Any) -> cri.PodSandboxStatusResponse:
        record = self.sandboxes.get(_required(request.pod_sandbox_id, "pod_sandbox_id"))
        status = self.sandbox_status(record)
        info = {}
        if request.verbose:
            info["info"] = json.dumps({
                "id": record.id, "state": record.state, "namespaces": record.namespaces.paths(),
                "hostname": record.hostname, "cgroupParent": record.cgroup_parent,
                "files": record.files, "portMappings": [vars(p) for p in record.port_mappings],
                "infra": record.infra.to_dict() if record.infra is not None else None,
                "userns": record.userns.to_dict() if record.userns is not None else None,
            })
        return cri.PodSandboxStatusResponse(status=status, info=info)

    def sandbox_status(self, record: SandboxRecord) -> cri.PodSandboxStatus:
        """The pod's status as PodSandboxStatus reports it (without verbose info)."""
        return _sandbox_status(record)

    def ListPodSandbox(self, request: cri.ListPodSandboxRequest, context: Any) -> Encoded[cri.ListPodSandboxResponse]:
        keep = _sandbox_filter(request.filter)
        records = self.sandboxes.list()
        if keep is not None:
            records = [r for r in records if keep(r)]
        return self.sandbox_replies.reply((r.id, r.state, lambda r=r: _pod_sandbox(r)) for r in records)

    def StreamPodSandboxes(self, request: cri.StreamPodSandboxesRequest, context: Any) -> Iterator[cri.StreamPodSandboxesResponse]:
        return list_streams.stream(
            context, lambda: self.ListPodSandbox(cri.ListPodSandboxRequest(filter=request.filter), context).items,
            lambda batch: cri.StreamPodSandboxesResponse(pod_sandboxes=batch), *self.stream_chunk)

    # -- containers --------------------------------------------------------

    def CreateContainer(self, request: cri.CreateContainerRequest, context: Any) -> cri.CreateContainerResponse:
        config = request.config
        if not config.metadata.name:
            raise InvalidArgument("CreateContainer: config.metadata.name is required")
        if not config.image.image:
            raise InvalidArgument("CreateContainer: config.image.image is required")
        validation.container_config(config)
        sandbox = self.sandboxes.get(_required(request.pod_sandbox_id, "pod_sandbox_id"))
        if sandbox.state != READY:
            raise FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
        image = self.images.resolve(config.image.image)
        if image is None:
            raise NotFound(f"image {config.image.image!r} not found: pull it first")
        make_missing_host_paths(config.mounts)
        layers = [self.images.layers.diff(d) for d in image.diff_ids]
        pod = oci_spec.PodContext(id=sandbox.id, min_oom_score_adj=self.min_oom_score_adj,
                                  recursive_read_only=self._handler_supports_rro(config, sandbox.handler),
                                  hostname=sandbox.hostname, namespaces=pod_namespaces(sandbox),
                                  cgroup_parent=sandbox.cgroup_parent, files=dict(sandbox.files),
                                  sysctls=dict(sandbox.sysctls), host_pid=sandbox.host_pid,
                                  userns=sandbox.userns)
        annotations = {
            **dict(config.annotations),
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": config.metadata.name,
            "io.kubernetes.cri.sandbox-id": sandbox.id,
            "io.kubernetes.cri.sandbox-name": sandbox.name,
            "io.kubernetes.cri.sandbox-namespace": sandbox.namespace,
            "io.kubernetes.cri.image-name": config.image.image,
        }
        name_hint = f"{sandbox.id[:12]}-{config.metadata.name}-{config.metadata.attempt}-{time.time_ns()}"
        spec = oci_spec.build_spec(config, image.config, layers, pod, name_hint, annotations)
        log_directory = sandbox.log_directory
        log_path = os.path.join(log_directory, config.log_path) if log_directory and config.log_path else ""
        volume_mounts = [m for m in config.mounts if oci_spec.is_image_mount(m)]
        # the image and those of image volumes (kubelet pulled them) stay until the container's record
        # names them; an image removed since it was resolved above fails the create
        with self.images.holding([image.id, *(m.image.image for m in volume_mounts)]) as (held, *volume_images):
            if held is None:
                raise NotFound(f"image {config.image.image!r} was removed while the container was created")
            volumes = self._image_volumes(volume_mounts, volume_images)
            volume_ids = {v.destination: v.image_id for v in volumes}
            new = NewContainer(
                pod_id=sandbox.id, name=config.metadata.name, attempt=config.metadata.attempt,
                handler=sandbox.handler, image=config.image.image, image_id=image.id,
                image_ref=image.repo_digests[0] if image.repo_digests else image.id,
                layers=layers, spec=spec, log_path=log_path, image_volumes=volumes,
                labels=dict(config.labels), annotations=dict(config.annotations),
                mounts=[_mount_record(m, volume_ids.get(m.container_path, "")) for m in config.mounts],
                stdin=config.stdin, stdin_once=config.stdin_once, tty=config.tty,
                stop_signal=str((image.config.get("config") or {}).get("StopSignal") or ""),
                user=spec.process.user,
            )
            try:
                record = self.containers.create(new)
            except ImageVolumeError as exc:
                raise type(exc)(f"{oci_spec.IMAGE_VOLUME_FAILED}: {exc}") from exc
        return cri.CreateContainerResponse(container_id=record.id)

    def _image_volumes(self, mounts: list[cri.Mount], images: list[ImageRecord | None]) -> list[ImageVolume]:
        """What the container service mounts for the image volumes `mounts` (spec validated)."""
        volumes = []
        for m, image in zip(mounts, images, strict=True):
            if image is None:
                raise NotFound(f"{oci_spec.IMAGE_VOLUME_FAILED}: image {m.image.image!r} of the volume at "
                               f"{m.container_path!r} not found: pull it first")
            volumes.append(ImageVolume(destination=m.container_path, image_id=image.id,
                                       layers=[self.images.layers.diff(d) for d in image.diff_ids],
                                       sub_path=oci_spec.image_sub_path(m)))
        return volumes

    def _handler_supports_rro(self, config: cri.ContainerConfig, handler: str) -> bool:
        """Ask the handler (once, cached) only when a mount wants recursive read-only."""
        if not any(m.recursive_read_only for m in config.mounts):
            return False
        return self.containers.handler(handler).features().recursive_read_only_mounts

    def StartContainer(self, request: cri.StartContainerRequest, context: Any) -> cri.StartContainerResponse:
        self.containers.start(_required(request.container_id, "container_id"))
        return cri.StartContainerResponse()

    def StopContainer(self, request: cri.StopContainerRequest, context: Any) -> cri.StopContainerResponse:
        record = self.containers.find(_required(request.container_id, "container_id"))
        if record is not None:
            self.containers.stop(record.id, max(0, request.timeout))
        return cri.StopContainerResponse()

    def RemoveContainer(self, request: cri.RemoveContainerRequest, context: Any) -> cri.RemoveContainerResponse:
        record = self.containers.find(_required(request.container_id, "container_id"))
        if record is not None:
            self.containers.remove(record.id)
        return cri.RemoveContainerResponse()

    def ListContainers(self, request: cri.ListContainersRequest, context: Any) -> Encoded[cri.ListContainersResponse]:
        f = request.filter
        records = self.containers.list(None, container_filter(f), wait=False)  # (may run in gRPC's polling thread)
        if f.HasField("state"):
            records = [r for r in records if CONTAINER_STATES[r.state] == f.state.state]
        return self.container_replies.reply((r.id, r.state, lambda r=r: _container(r)) for r in records)

    def StreamContainers(self, request: cri.StreamContainersRequest, context: Any) -> Iterator[cri.StreamContainersResponse]:
        return list_streams.stream(
            context, lambda: self.ListContainers(cri.ListContainersRequest(filter=request.filter), context).containers,
            lambda batch: cri.StreamContainersResponse(containers=batch), *self.stream_chunk)

    def ContainerStatus(self, request: cri.ContainerStatusRequest,
                        context: Any) -> cri.ContainerStatusResponse | Encoded[cri.ContainerStatusResponse]:
        record = self.containers.get(_required(request.container_id, "container_id"), wait=False)  # (as ListContainers)
        spec = self._spec(record)
        if not request.verbose:  # (kubelet's log manager asks about every container every 10 s)
            # what of a status can change: the state and what goes with it, and the spec (its
            # resources, replaced by UpdateContainerResources); the rest is fixed at create
            return self.status_replies.reply(
                record.id, (record.state, record.started_at, record.finished_at, record.exit_code, record.reason,
                            record.message), (spec,),
                lambda: cri.ContainerStatusResponse(status=self.full_container_status(record, spec)))
        info = {}
        if request.verbose:  # the container's config.json, as containerd's verbose status has it
            head = json.dumps({
                "pid": record.pid if record.state == RUNNING else 0, "sandboxID": record.pod_id,
                "runtimeHandler": record.handler, "state": record.state,
                "bundle": str(self.containers.paths(record).bundle),
            })
            # (the spec's JSON text is kept with it: json.dumps of the whole, without encoding it again)
            info["info"] = f'{head[:-1]}, "runtimeSpec": {self._spec_json(record) if spec else "null"}}}'
        return cri.ContainerStatusResponse(status=self.full_container_status(record, spec), info=info)

    def full_container_status(self, record: ContainerRecord, spec: Spec | None = None) -> cri.ContainerStatus:
        """The container's status as ContainerStatus reports it (without verbose info); `spec`
        is its config.json when the caller has read it already."""
        spec = spec or self._spec(record)
        status = container_status(record)
        user = record.user or (spec.process.user if spec else None)
        if user is not None:
            status.user.CopyFrom(container_user(user))
        resources = oci_spec.cri_resources(spec) if spec else None
        if resources is not None:
            status.resources.CopyFrom(resources)
        return status

    def _spec(self, record: ContainerRecord) -> Spec | None:
        """The container's config.json: the user of containers made before pycri kept it in the
        record, and the resources it runs with."""
        try:
            return self.containers.spec(record)
        except (OSError, ValueError):
            return None

    def _spec_json(self, record: ContainerRecord) -> str:
        """`_spec`'s config.json as JSON text ("null" when there is none)."""
        try:
            return self.containers.spec_json(record)
        except (OSError, ValueError):
            return "null"

    def ExecSync(self, request: cri.ExecSyncRequest, context: Any) -> cri.ExecSyncResponse:
        result = self.containers.exec_sync(_required(request.container_id, "container_id"), list(request.cmd),
                                           float(request.timeout))
        return cri.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    def UpdateRuntimeConfig(self, request: cri.UpdateRuntimeConfigRequest, context: Any) -> cri.UpdateRuntimeConfigResponse:
        return cri.UpdateRuntimeConfigResponse()  # pod CIDR: the CNI config owns addressing


def _container(r: ContainerRecord) -> cri.Container:
    """A container as ListContainers lists it."""
    return cri.Container(
        id=r.id, pod_sandbox_id=r.pod_id, metadata=cri.ContainerMetadata(name=r.name, attempt=r.attempt),
        image=cri.ImageSpec(image=r.image), image_ref=r.image_ref, image_id=r.image_id,
        state=CONTAINER_STATES[r.state], created_at=r.created_at, labels=r.labels, annotations=r.annotations,
    )


def container_status(record: ContainerRecord) -> cri.ContainerStatus:
    return cri.ContainerStatus(
        id=record.id, metadata=cri.ContainerMetadata(name=record.name, attempt=record.attempt),
        state=CONTAINER_STATES[record.state], created_at=record.created_at, started_at=record.started_at,
        finished_at=record.finished_at, exit_code=record.exit_code, image=cri.ImageSpec(image=record.image),
        image_ref=record.image_ref, image_id=record.image_id, reason=record.reason, message=record.message,
        labels=record.labels, annotations=record.annotations, log_path=record.log_path,
        mounts=[_mount_status(m) for m in record.mounts],
    )


def _mount_record(m: cri.Mount, image_id: str) -> ContainerMount:
    """A mount as the container's record keeps it for ContainerStatus."""
    if not image_id:
        return ContainerMount(m.container_path, m.host_path, m.readonly, m.propagation, m.recursive_read_only)
    return ContainerMount(m.container_path, m.host_path, m.readonly, m.propagation, m.recursive_read_only,
                          image_id=image_id, user_specified_image=m.image.user_specified_image,
                          image_sub_path=m.image_sub_path)


def _mount_status(m: ContainerMount) -> cri.Mount:
    """An image volume reports its image by id, in image and image_ref (what PullImage
    returned, which kubelet's image garbage collection and critest look for)."""
    mount = cri.Mount(container_path=m.container_path, host_path=m.host_path, readonly=m.readonly,
                      recursive_read_only=m.recursive_read_only, propagation=m.propagation,
                      image_sub_path=m.image_sub_path)
    if m.image_id:
        mount.image.CopyFrom(cri.ImageSpec(image=m.image_id, image_ref=m.image_id,
                                           user_specified_image=m.user_specified_image))
    return mount


def container_user(user: User) -> cri.ContainerUser:
    """The identity the runtime gave the container's first process (the spec's process.user)."""
    return cri.ContainerUser(linux=cri.LinuxContainerUser(
        uid=user.uid, gid=user.gid, supplemental_groups=list(user.additional_gids),
    ))


def _required(value: str, name: str) -> str:
    if not value:
        raise InvalidArgument(f"{name} is required")
    return value


_SANDBOX_READY, _SANDBOX_NOTREADY = cri.SANDBOX_READY, cri.SANDBOX_NOTREADY  # (an enum wrapper's attribute is a Python lookup)


def _sandbox_state(record: SandboxRecord) -> int:
    return _SANDBOX_READY if record.state == READY else _SANDBOX_NOTREADY


def _sandbox_metadata(record: SandboxRecord) -> cri.PodSandboxMetadata:
    return cri.PodSandboxMetadata(name=record.name, namespace=record.namespace, uid=record.uid, attempt=record.attempt)


def _pod_sandbox(record: SandboxRecord) -> cri.PodSandbox:
    """A pod as ListPodSandbox lists it."""
    return cri.PodSandbox(
        id=record.id, metadata=_sandbox_metadata(record), state=_sandbox_state(record),
        created_at=record.created_at, labels=record.labels, annotations=record.annotations,
        runtime_handler=record.handler,
    )


def _sandbox_status(record: SandboxRecord) -> cri.PodSandboxStatus:
    node, pod = cri.NamespaceMode.NODE, cri.NamespaceMode.POD
    options = cri.NamespaceOption(
        network=node if record.host_network else pod,
        ipc=node if record.host_ipc else pod,
        pid=node if record.host_pid else pod if record.infra is not None else cri.NamespaceMode.CONTAINER,
        userns_options=userns.to_cri(record.userns),
    )
    network = cri.PodSandboxNetworkStatus(
        ip=record.ips[0] if record.ips else "",
        additional_ips=[cri.PodIP(ip=ip) for ip in record.ips[1:]],
    )
    return cri.PodSandboxStatus(
        id=record.id, metadata=_sandbox_metadata(record), state=_sandbox_state(record), created_at=record.created_at,
        network=network, linux=cri.LinuxPodSandboxStatus(namespaces=cri.Namespace(options=options)),
        labels=record.labels, annotations=record.annotations, runtime_handler=record.handler,
    )
