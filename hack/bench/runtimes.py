"""The two runtimes under test, each a daemon of its own: own root, state, socket, CNI network.

`PycriDaemon` runs `pycri serve` with hack/pycri.toml's registry settings (the test registry
on 127.0.0.1:5000 mirrors docker.io, registry.k8s.io, gcr.io, k8s.gcr.io, public.ecr.aws).
`ContainerdDaemon` runs containerd v2 (config version 3) with the runc shim and runc from
hack/bench/build-containerd.sh, hosts.toml mirrors to the same registry, a bridge network on
a subnet of its own, `restrict_oom_score_adj` (this VM refuses a negative oom_score_adj),
network namespaces under its state directory. Neither touches the default pycri
(/run/pycri) or /etc/cni/net.d.

Each network is the runtime's own default on a bridge and subnet of the bench's: pycri's is
pycri's default network (sandbox/default_network.py: `ipMasq` false, the daemon masquerades its
subnet once with a nat chain of its own, sandbox/masquerade.py), containerd's a bridge with
`ipMasq` true as containerd's own default conflist has (the plugin makes a nat chain per pod).
`remove_bridge()`, which every take-down runs, removes the pycri daemon's masquerade chain too.

Each knows the processes that are the runtime's own (daemon, monitors, infra/pause, not the
workloads) for the memory figures, and what it may leave behind (mounts, cgroups, processes).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from pycri.sandbox import default_network, masquerade
from pycri.sandbox.cni import CONFIG_SUFFIXES

log = structlog.get_logger("bench")

REPO = Path(__file__).resolve().parents[2]
BENCH_ROOT = Path(os.environ.get("PYCRI_BENCH_ROOT", "/var/lib/pycri-bench"))
BENCH_STATE = Path(os.environ.get("PYCRI_BENCH_STATE", "/run/pycri-bench"))
CNI_BIN_DIR = "/usr/lib/cni"
# the mirrored registries and where the test registry serves each (as hack/pycri.toml)
MIRRORED = ("docker.io", "registry.k8s.io", "k8s.gcr.io", "gcr.io", "public.ecr.aws")
LOCAL_REGISTRY = "127.0.0.1:5000"
CGROUP_V1_ROOT = Path("/sys/fs/cgroup")
# what every benchmark container runs: how its processes are told from the runtime's own
WORKLOAD = ["sleep", "86400"]


def bridge_conflist(name: str, bridge: str, subnet: str, data_dir: Path, ip_masq: bool = True) -> str:
    """A bridge + portmap CNI network on its own bridge and subnet; with `ip_masq` (containerd's
    default conflist has it) the bridge plugin masquerades each pod with a nat chain of its own."""
    return json.dumps({
        "cniVersion": "1.0.0", "name": name,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": ip_masq, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(data_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }, indent=1)


def pss_kib(pid: int) -> int:
    """Proportional set size of a process (smaps_rollup), 0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    match = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


WARM_LAUNCHER = "from pycri.sandbox.pause import launch, serve"  # its command line (pause.serve_bootstrap)


def mounts_under(directory: Path) -> list[str]:
    """The mount points at or below `directory` (from this process's mount table)."""
    prefix = str(directory).rstrip("/") + "/"
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        points = [line.split(" ")[4].replace("\\040", " ") for line in f]
    return [p for p in points if p == str(directory) or p.startswith(prefix)]


@dataclass
class Proc:
    pid: int
    ppid: int
    comm: str
    cmdline: list[str]


def processes() -> list[Proc]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        out.append(Proc(int(entry), ppid, comm, [a.decode(errors="replace") for a in raw.split(b"\0") if a]))
    return out


def descendants(procs: list[Proc], roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p.pid)
    seen, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return seen


@dataclass
class Daemon:
    """What both runtimes share: a process, a socket, a crictl config, a log."""

    name: str
    root: Path
    state: Path
    socket: Path
    subnet: str
    bridge: str
    process: subprocess.Popen[bytes] | None = None
    # the cgroups under the default parent when the daemon started (None: not started here)
    cgroups_before: set[str] | None = None
    work: Path = field(init=False)

    def __post_init__(self) -> None:
        self.work = BENCH_ROOT / "work" / self.name
        self.cni_conf_dir = BENCH_ROOT / "cni" / self.name
        self.log_file = BENCH_ROOT / f"{self.name}.log"
        self.crictl_config = self.work / "crictl.yaml"
        # the cgroup every pod of this runtime goes under (cgroupfs driver): checked and removed at the end
        self.cgroup_parent = f"/pycri-bench-{self.name}"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def prepare(self) -> None:
        """Fresh root, state and work directories; the CNI network; the crictl config."""
        mounted = mounts_under(self.root)
        if mounted:  # a wipe would delete the rows and go on through the rootfs mounts, into their files
            raise SystemExit(f"{self.root} still has {len(mounted)} mounts (first: {mounted[0]}): an earlier "
                             f"daemon's containers are there; take them down first (`down`, or umount)")
        for d in (self.root, self.state, self.work):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        self.write_network()
        self.crictl_config.write_text(
            f"runtime-endpoint: {self.endpoint}\nimage-endpoint: {self.endpoint}\ntimeout: 120\n")

    def write_network(self) -> Path:
        """The network list, alone in this daemon's CNI conf dir (an earlier run's list, which
        might sort first, is removed); returns its path."""
        self.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        for old in self.cni_conf_dir.iterdir():
            if old.name.endswith(CONFIG_SUFFIXES):
                old.unlink()
        name, text = self.network()
        path = self.cni_conf_dir / name
        path.write_text(text)
        return path

    def network(self) -> tuple[str, str]:
        """(file name, content) of this runtime's network list."""
        return f"10-{self.name}-bench.conflist", bridge_conflist(
            f"{self.name}-bench", self.bridge, self.subnet, self.root / "cni-networks")

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.cgroups_before = self.shared_cgroups()
        self.prepare()
        self.write_config()
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True, env=self.env())
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; log {self.log_file}:\n"
                                   + self.log_file.read_text()[-3000:])
            if self.socket.exists() and self.crictl("version", check=False).returncode == 0:
                # Status, as kubelet's first call: the runtime readies its network (pycri makes its
                # masquerade chain) before anything is measured
                self.crictl("info", check=False)
                log.info("started", runtime=self.name, pid=self.process.pid, endpoint=self.endpoint)
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer on {self.endpoint} in 90 s; log {self.log_file}")

    def write_config(self) -> None:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def crictl(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["crictl", "--config", str(self.crictl_config), *args],
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name}: crictl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def remove_all(self) -> None:
        """Stop and remove every pod (and so every container) of this runtime."""
        if self.process is None or self.process.poll() is not None:
            return
        self.remove_pods()

    def remove_pods(self) -> None:
        """Stop and remove every pod and container over crictl, whoever started the daemon."""
        for _ in range(3):
            pods = self.crictl("pods", "-q", check=False).stdout.split()
            if pods:
                self.crictl("stopp", *pods, check=False)
                self.crictl("rmp", "-f", *pods, check=False)
            ctrs = self.crictl("ps", "-a", "-q", check=False).stdout.split()
            if ctrs:
                self.crictl("rm", "-f", *ctrs, check=False)
            if not pods and not ctrs:
                return

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.after_stop()

    def after_stop(self) -> None:
        """Take down what outlives the daemon by design (pin mounts, idle shims)."""

    def daemon_pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def daemon_pids(self) -> set[int]:
        """The daemon and what it keeps for its whole life (not per pod)."""
        return {self.daemon_pid()}

    def own_pids(self) -> set[int]:
        """The runtime's own processes: daemon, monitors, infra/pause; not the containers' workloads."""
        raise NotImplementedError

    # ------------------------------------------------------------ what may be left behind
    def leftover_mounts(self) -> list[str]:
        paths = (str(self.root), str(self.state))
        return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4].startswith(paths)]

    # pods with no cgroup parent (critest's) go under a parent the runtime picks: containerd's
    # /k8s.io/<id>, pycri's /pycri/<id> (shared with the default pycri, so only new entries count)
    default_cgroup_parent = ""

    def shared_cgroups(self) -> set[str]:
        """Every cgroup directory under the default parent, in every hierarchy (and the parent)."""
        if not self.default_cgroup_parent:
            return set()
        out = set()
        for top in CGROUP_V1_ROOT.glob(f"*{self.default_cgroup_parent}"):
            out.add(str(top))
            # os.walk, not rglob: another runtime may remove a cgroup while this walks
            # (rglob raised FileNotFoundError then); a vanished directory is skipped
            out.update(os.path.join(d, name) for d, dirs, _ in os.walk(top) for name in dirs)
        return out

    def leftover_cgroups(self) -> list[str]:
        ours = [str(p) for p in CGROUP_V1_ROOT.glob(f"*{self.cgroup_parent}") if p.is_dir()]
        new = self.shared_cgroups() - self.cgroups_before if self.cgroups_before is not None else set()
        return ours + sorted(new)

    def remove_cgroups(self) -> None:
        """rmdir this runtime's (empty) cgroups: its pods' parent in every hierarchy, and what
        appeared under the default parent while it ran; deepest first."""
        dirs = [p for top in CGROUP_V1_ROOT.glob(f"*{self.cgroup_parent}") for p in [top, *top.rglob("*")] if p.is_dir()]
        if self.cgroups_before is not None:
            dirs += [Path(d) for d in self.shared_cgroups() - self.cgroups_before]
        for d in sorted(set(dirs), key=lambda p: -len(p.parts)):
            try:
                d.rmdir()
            except OSError:
                pass

    def leftover_processes(self) -> list[str]:
        marks = (str(self.root), str(self.state), str(self.socket))
        return [f"{p.pid} {' '.join(p.cmdline)[:120]}" for p in processes()
                if p.pid != os.getpid() and any(m in a for a in p.cmdline for m in marks)]

    def leftover_ip_leases(self) -> list[str]:
        """host-local IPAM leases not released (a pod's network torn down without CNI DEL).
        Network namespaces are pinned by mounts under the state directory: leftover_mounts."""
        nets = self.root / "cni-networks"
        if not nets.is_dir():
            return []
        return [str(p) for p in nets.rglob("*") if p.is_file() and re.match(r"^[0-9a-f.:]+$", p.name)]

    def leftovers(self) -> list[str]:
        return ([f"mount {m}" for m in self.leftover_mounts()] + [f"cgroup {c}" for c in self.leftover_cgroups()]
                + [f"process {p}" for p in self.leftover_processes()] + [f"ip lease {n}" for n in self.leftover_ip_leases()])

    def remove_bridge(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


class PycriDaemon(Daemon):
    """`pycri serve` with hack/pycri.toml's registry settings and its own root/state/network."""

    def __init__(self, handler: str = "", runc: Path | None = None) -> None:
        super().__init__("pycri", BENCH_ROOT / "pycri", BENCH_STATE / "pycri",
                         BENCH_STATE / "pycri" / "pycri.sock", subnet="10.89.0.0/16", bridge="pycribench0")
        self.handler = handler
        self.runc = runc
        self.config = BENCH_ROOT / "pycri.toml"
        self.default_cgroup_parent = "/pycri"

    def write_config(self) -> None:
        base = (REPO / "hack" / "pycri.toml").read_text()
        # hack/pycri.toml's own listen/root/state lines give way to ours; its other tables stay
        base = re.sub(r'^(listen|root|state) = .*\n', "", base, flags=re.M)
        base = re.sub(r'^level = .*$', 'level = "info"', base, flags=re.M)
        head = f'listen = "{self.endpoint}"\nroot = "{self.root}"\nstate = "{self.state}"\n'
        extra = f'\n[network]\ncni_conf_dir = "{self.cni_conf_dir}"\ncni_bin_dirs = ["{CNI_BIN_DIR}"]\nwrite_default = false\n'
        if self.handler:
            extra += f'\n[runtime]\ndefault_handler = "{self.handler}"\n'
        if self.runc is not None:
            extra += f'\n[runtime.handlers."runc"]\npath = "{self.runc}"\n'
        self.config.write_text(head + base + extra)

    def command(self) -> list[str]:
        return [str(REPO / ".venv" / "bin" / "pycri"), "--config", str(self.config), "serve"]

    # the masquerade's iptables (None: the real one); unit tests give a fake
    iptables: masquerade.Runner | None = None

    def network(self) -> tuple[str, str]:
        """pycri's own default network (the file and name `ensure_default` writes, ipMasq false)
        on this daemon's bridge, subnet and lease directory: the daemon masquerades the subnet."""
        doc = default_network.default_conflist(bridge=self.bridge, subnet=self.subnet,
                                               data_dir=self.root / "cni-networks")
        return default_network.DEFAULT_FILE, json.dumps(doc, indent=1)

    def remove_bridge(self) -> None:
        super().remove_bridge()
        self.remove_masquerade()

    def leftovers(self) -> list[str]:
        chain = masquerade.masquerade_for(default_network.DEFAULT_NAME, self.subnet).chain
        try:
            there = (self.iptables or masquerade.IptablesRunner())(["-t", "nat", "-S", chain]).returncode == 0
        except masquerade.MasqueradeError:  # no iptables: no chain
            there = False
        return super().leftovers() + ([f"nat chain {chain} (masquerade of {self.subnet})"] if there else [])

    def remove_masquerade(self) -> None:
        """The nat chain and jump the daemon made for its subnet (they outlive it by design)."""
        try:
            masquerade.remove(default_network.DEFAULT_NAME, self.subnet, self.iptables)
        except masquerade.MasqueradeError as e:
            log.warning("removing the masquerade chain failed", runtime=self.name, subnet=self.subnet, error=str(e))

    def after_stop(self) -> None:
        ns_root = self.state / "ns"
        if str(ns_root) in Path("/proc/self/mountinfo").read_text():
            subprocess.run(["umount", "-l", str(ns_root)], check=False)

    def daemon_pids(self) -> set[int]:
        """The daemon and its warm infra launcher (sandbox/warm_launcher.py: one for the daemon's
        life, started with it, not per pod)."""
        daemon = self.daemon_pid()
        return {daemon} | {p.pid for p in processes() if p.ppid == daemon and any(WARM_LAUNCHER in a for a in p.cmdline)}

    def own_pids(self) -> set[int]:
        procs = processes()
        marks = (str(self.root), str(self.state))
        # the daemon and its children; conmons (double-forked away) and infra processes name
        # this runtime's root or state on their command line
        roots = {self.daemon_pid()} | {p.pid for p in procs if any(m in a for a in p.cmdline for m in marks)}
        return descendants(procs, roots) - workloads(procs)


class ContainerdDaemon(Daemon):
    """containerd v2 (config version 3) + containerd-shim-runc-v2 + runc, from the build cache."""

    def __init__(self, bin_dir: Path, sandbox_image: str = "registry.k8s.io/pause:3.10.2") -> None:
        super().__init__("containerd", BENCH_ROOT / "containerd", BENCH_STATE / "containerd" / "state",
                         BENCH_STATE / "containerd" / "containerd.sock", subnet="10.90.0.0/16", bridge="ctrdbench0")
        self.bin_dir = bin_dir
        self.sandbox_image = sandbox_image
        self.config = BENCH_ROOT / "containerd.toml"
        self.default_cgroup_parent = "/k8s.io"
        self.hosts_dir = BENCH_ROOT / "certs.d"

    def write_config(self) -> None:
        for registry in MIRRORED:
            d = self.hosts_dir / registry
            d.mkdir(parents=True, exist_ok=True)
            # override_path: the path is the registry API root, so /v2/docker.io/library/busybox/...
            (d / "hosts.toml").write_text(
                f'server = "https://{registry}"\n\n[host."http://{LOCAL_REGISTRY}/v2/{registry}"]\n'
                '  capabilities = ["pull", "resolve"]\n  override_path = true\n')
        runtime = "plugins.'io.containerd.cri.v1.runtime'"
        self.config.write_text(f"""version = 3
root = "{self.root}"
state = "{self.state}"

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.socket}.ttrpc"

[debug]
  level = "info"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{self.sandbox_image}"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{self.hosts_dir}"

[plugins.'io.containerd.transfer.v1.local']
  config_path = "{self.hosts_dir}"

[{runtime}]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [{runtime}.containerd]
    default_runtime_name = "runc"
    [{runtime}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{runtime}.containerd.runtimes.runc.options]
        BinaryName = "{self.bin_dir / 'runc'}"
        SystemdCgroup = false
  [{runtime}.cni]
    bin_dirs = ["{CNI_BIN_DIR}"]
    conf_dir = "{self.cni_conf_dir}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
""")

    def command(self) -> list[str]:
        return [str(self.bin_dir / "containerd"), "--config", str(self.config)]

    def env(self) -> dict[str, str]:
        # containerd finds its shim on PATH; the shim finds runc by BinaryName
        return {**os.environ, "PATH": f"{self.bin_dir}:{os.environ['PATH']}"}

    def shims(self, procs: list[Proc]) -> set[int]:
        return {p.pid for p in procs if p.comm.startswith("containerd-shim")
                and any(str(self.socket) in a for a in p.cmdline)}

    def own_pids(self) -> set[int]:
        procs = processes()
        # the daemon, the shims (re-parented away from it) and what they run, minus the workloads
        roots = {self.daemon_pid()} | self.shims(procs)
        return descendants(procs, roots) - workloads(procs)

    def after_stop(self) -> None:
        """Shims outlive containerd: kill the ones serving this containerd (all its pods are gone)."""
        for pid in self.shims(processes()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def workloads(procs: list[Proc]) -> set[int]:
    """Every container's workload (WORKLOAD) and what it runs."""
    return descendants(procs, {p.pid for p in procs if p.cmdline == WORKLOAD})
