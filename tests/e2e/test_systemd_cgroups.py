"""The systemd cgroup driver in a kind node (issue 13, item 5): systemd is PID 1 there, on a
cgroup v1 hybrid layout.

Opt-in like tests/e2e/test_kind.py (it needs dockerd and the node image, and builds the image
if docker lacks it):

    PYCRI_KIND_E2E=1 .venv/bin/python -m pytest tests/e2e/test_systemd_cgroups.py -q -p no:cacheprovider

A node container is started as kind starts one; the checkout's pycri packages (and jeepney,
from this venv, should the image predate it) are copied over the node's installed ones, the
node's /etc/pycri/pycri.toml gets `driver = "systemd"`, and pycri is restarted. Then, with
crictl in the node, for each runtime handler (pycri-runtime, runc, crun): the pod slice is made
as kubelet makes it (systemd, not mkdir), a pod with a shared PID namespace runs in it, and a
container with limits; its scope is active in that slice with Delegate=yes, holds the process
(/proc/<pid>/cgroup), and memory.limit_in_bytes holds the limit; the infra process has its
scope pycri-<sandbox id>.scope; after stop and rm no pycri scope is left.
"""
from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.kind_support import OPT_IN, REPO, node_image, poll, remove_node, run, start_node

SITE = "/opt/pycri/venv/lib/python3.13/site-packages"
PACKAGES = ("api", "cgroups", "common", "containers", "criserver", "images", "kernel", "runtime", "sandbox",
            "store", "streaming")
CONTAINER_IMAGE = "registry.k8s.io/kube-proxy:v1.37.2"  # preloaded in the node, with /bin/sh
LIMIT = 64 << 20

pytestmark = OPT_IN


@pytest.fixture(scope="module")
def node() -> Iterator[str]:
    name = start_node(f"pycri-systemd-test-{uuid.uuid4().hex[:8]}", node_image())
    try:
        poll("pycri.service active", lambda: sh(name, "systemctl is-active pycri", check=False).stdout.strip() == "active")
        install_checkout(name)
        sh(name, "sed -i 's/^driver = .*/driver = \"systemd\"/' /etc/pycri/pycri.toml && systemctl restart pycri")
        poll("pycri answers", lambda: sh(name, "crictl version", check=False).returncode == 0)
        yield name
    finally:
        # the parents pycri made in hierarchies systemd does not manage, which may be the host's
        # and outlive the node (rmdir leaves any another node still uses)
        sh(name, "for d in $(find /sys/fs/cgroup -depth -type d \\( -name kubepods-besteffort.slice "
                 "-o -name kubepods.slice -o -name pycri.slice \\)); do rmdir $d 2>/dev/null; done", check=False)
        remove_node(name)


def sh(node: str, script: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return run("docker", "exec", "-i", node, "sh", "-c", script, check=check, timeout=180, input=input)


def install_checkout(node: str) -> None:
    """The checkout's packages over the node's wheel install; jeepney too if the node lacks it."""
    tar = subprocess.run(["tar", "-C", str(REPO), "-c", "--exclude=__pycache__", *PACKAGES],
                         check=True, capture_output=True).stdout
    subprocess.run(["docker", "exec", "-i", node, "tar", "-C", f"{SITE}/pycri", "-x"], input=tar, check=True)
    if sh(node, f"test -d {SITE}/jeepney", check=False).returncode != 0:
        import jeepney

        source = Path(jeepney.__file__).parent
        tar = subprocess.run(["tar", "-C", str(source.parent), "-c", "--exclude=__pycache__", "jeepney"],
                             check=True, capture_output=True).stdout
        subprocess.run(["docker", "exec", "-i", node, "tar", "-C", SITE, "-x"], input=tar, check=True)


def show(node: str, unit: str, *props: str) -> dict[str, str]:
    out = sh(node, f"systemctl show -p {','.join(props)} {unit}").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def pycri_scopes(node: str) -> list[str]:
    out = sh(node, "systemctl list-units --type=scope --all --plain --no-legend").stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("pycri-")]


def effective_config(node: str) -> str:
    """pycri's effective configuration (TOML) from crictl info."""
    value = json.loads(sh(node, "crictl info").stdout)["config"]
    if value.startswith('"'):
        return json.loads(value)
    return json.loads(f'"{value}"') if '\\"' in value else value  # escaped once more on the way


def test_runtime_config_says_systemd(node: str) -> None:
    assert "SYSTEMD" in sh(node, "crictl runtime-config").stdout
    assert 'driver = "systemd"' in effective_config(node)


@pytest.mark.parametrize("handler", ["pycri", "runc", "crun"])
def test_container_in_a_systemd_scope(node: str, handler: str) -> None:
    if f'[runtime.handlers."{handler}"]' not in effective_config(node):
        pytest.skip(f"no {handler} handler in the node")
    uid = uuid.uuid4().hex[:12]
    pod_slice = f"kubepods-besteffort-pod{uid}.slice"
    sh(node, f"systemctl start {pod_slice}")  # kubelet makes the pod slice through systemd
    pod = {"metadata": {"name": f"sd-{handler}", "namespace": "default", "uid": uid, "attempt": 0},
           "log_directory": f"/tmp/sd-{uid}",
           # kubelet sends the slice's expanded path (its cgroup name's ToSystemd()); a bare slice
           # name is taken too
           "linux": {"cgroup_parent": (f"/kubepods.slice/kubepods-besteffort.slice/{pod_slice}" if handler == "pycri"
                                       else pod_slice),
                     "security_context": {"namespace_options": {"pid": 0, "network": 2}}}}
    container = {"metadata": {"name": "sleeper"}, "image": {"image": CONTAINER_IMAGE},
                 "command": ["/bin/sh", "-c", "sleep 3600"], "log_path": "sleeper.log",
                 "linux": {"resources": {"memory_limit_in_bytes": LIMIT, "cpu_shares": 256}}}
    sh(node, f"cat > /tmp/pod-{uid}.json", input=json.dumps(pod))
    sh(node, f"cat > /tmp/ctr-{uid}.json", input=json.dumps(container))
    sandbox = sh(node, f"crictl runp --runtime {handler} /tmp/pod-{uid}.json").stdout.strip()
    ctr = sh(node, f"crictl create {sandbox} /tmp/ctr-{uid}.json /tmp/pod-{uid}.json").stdout.strip()
    sh(node, f"crictl start {ctr}")
    info = json.loads(sh(node, f"crictl inspect {ctr}").stdout)
    cgroups_path = info["info"]["runtimeSpec"]["linux"]["cgroupsPath"]
    slice_name, prefix, name = cgroups_path.split(":")
    assert (slice_name, prefix) == (pod_slice, "pycri")
    scope = f"pycri-{name}.scope"

    props = show(node, scope, "ActiveState", "Slice", "Delegate")
    assert props == {"ActiveState": "active", "Slice": pod_slice, "Delegate": "yes"}
    pid = info["info"]["pid"]
    memory = next(line.split(":", 2)[2] for line in sh(node, f"cat /proc/{pid}/cgroup").stdout.splitlines()
                  if line.split(":")[1] == "memory")
    expected = f"/kubepods.slice/kubepods-besteffort.slice/{pod_slice}/{scope}"
    assert memory == expected or memory.startswith(expected + "/"), memory  # crun: <scope>/container
    assert int(sh(node, f"cat /sys/fs/cgroup/memory{memory}/memory.limit_in_bytes").stdout) == LIMIT
    # the shared PID namespace's infra process: its own scope in the pod slice, not in pycri.service
    infra = show(node, f"pycri-{sandbox}.scope", "ActiveState", "Slice", "Delegate")
    assert infra == {"ActiveState": "active", "Slice": pod_slice, "Delegate": "yes"}
    # pod stats read the pod slice's cgroup
    stats = json.loads(sh(node, f"crictl statsp -o json --id {sandbox}").stdout)
    assert int(stats["stats"][0]["linux"]["memory"]["workingSetBytes"]["value"]) > 0

    # systemd realising the slice again (a sibling unit, a property of the slice, a reload) leaves
    # the container in its cgroups: the unit's properties say it needs them (DevicePolicy, ...)
    sh(node, f"systemd-run --quiet --slice={pod_slice} --scope -p 'DeviceAllow=/dev/null rw' true && "
             f"systemctl set-property --runtime {pod_slice} CPUWeight=90 && systemctl daemon-reload")
    now = {line.split(":")[1]: line.split(":", 2)[2] for line in sh(node, f"cat /proc/{pid}/cgroup").stdout.splitlines()}
    assert now["memory"] == memory, now
    if handler != "runc":  # Debian's runc 1.1.15: systemd moves its process up to the slice in devices
        assert now["devices"].startswith(expected), now
    assert int(sh(node, f"cat /sys/fs/cgroup/memory{memory}/memory.limit_in_bytes").stdout) == LIMIT

    if handler == "pycri":  # update: the new limit in the cgroup and in the unit's properties
        sh(node, f"crictl update --memory {2 * LIMIT} {ctr}")
        assert int(sh(node, f"cat /sys/fs/cgroup/memory{memory}/memory.limit_in_bytes").stdout) == 2 * LIMIT
        assert show(node, scope, "MemoryMax") == {"MemoryMax": str(2 * LIMIT)}

    sh(node, f"crictl stop {ctr} && crictl rm {ctr} && crictl stopp {sandbox} && crictl rmp {sandbox}")
    # systemd drops an emptied scope by itself, some moments after its last process
    poll("no pycri scope left", lambda: not pycri_scopes(node), deadline_s=30)
    assert sh(node, f"test -e /sys/fs/cgroup/memory{memory}", check=False).returncode != 0
    sh(node, f"systemctl stop {pod_slice}")
    remove_slice_dirs(node, pod_slice)


def remove_slice_dirs(node: str, pod_slice: str) -> None:
    """What kubelet's pod cgroup removal does besides stopping the slice: its directory in the
    hierarchies systemd does not manage (hugetlb, net_cls, ... where pycri made it as the
    parent of its scopes; in a node those hierarchies may be the host's, shared by every node)."""
    sh(node, f"find /sys/fs/cgroup -depth -type d -name {pod_slice} -exec rmdir {{}} +", check=False)


def test_pod_without_parent_gets_a_slice_of_its_own(node: str) -> None:
    uid = uuid.uuid4().hex[:12]
    pod = {"metadata": {"name": "sd-own", "namespace": "default", "uid": uid, "attempt": 0},
           "linux": {"security_context": {"namespace_options": {"network": 2}}}}
    sh(node, f"cat > /tmp/pod-{uid}.json", input=json.dumps(pod))
    sandbox = sh(node, f"crictl runp /tmp/pod-{uid}.json").stdout.strip()
    own = f"pycri-{sandbox}.slice"
    assert json.loads(sh(node, f"crictl inspectp {sandbox}").stdout)["info"]["cgroupParent"] == own
    assert show(node, own, "ActiveState") == {"ActiveState": "active"}
    sh(node, f"crictl stopp {sandbox} && crictl rmp {sandbox}")
    assert show(node, own, "ActiveState")["ActiveState"] == "inactive"


def test_a_cgroupfs_parent_is_refused(node: str) -> None:
    uid = uuid.uuid4().hex[:12]
    pod = {"metadata": {"name": "sd-bad", "namespace": "default", "uid": uid, "attempt": 0},
           "linux": {"cgroup_parent": f"/kubepods/besteffort/pod{uid}"}}
    sh(node, f"cat > /tmp/pod-{uid}.json", input=json.dumps(pod))
    result = sh(node, f"crictl runp /tmp/pod-{uid}.json", check=False)
    assert result.returncode != 0 and "InvalidArgument" in result.stderr and "slice" in result.stderr
