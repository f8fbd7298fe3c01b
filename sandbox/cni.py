"""A CNI client (runtime side of the CNI spec 1.0; 0.3/0.4 network lists and 0.1/0.2 results too).

The network is the first configuration file in the conf dir by name (*.conflist, *.conf,
*.json); a file that does not parse is logged and skipped. A *.conf file (one plugin) is used
as a list of one. Plugins are executables named by their `type`, found in the bin dirs.

ADD runs the plugins in order: each gets the list's `name` and `cniVersion`, the previous
plugin's result as `prevResult`, and in `runtimeConfig` the runtime's values for the
capabilities it declares (portMappings, dns, bandwidth, ...) and nothing else. The last
result is the attachment's result. A failed ADD is rolled back with a DEL of the whole list
(every plugin, even those not run, errors logged) so no lease or interface is left.

DEL runs the plugins in reverse order with the cached ADD result as `prevResult`; per the
spec it stops at the first error and succeeds when things are already gone. The cache (one
JSON file per network, container and interface) holds the network list, the runtime values
and the result used at ADD, so a DEL after a restart or a config change tears down exactly
what was set up; it is written before the first plugin runs (so a crash half-way is still
torn down) and removed after a successful DEL. That first write is fsynced (an IP lease on disk
outlives a power loss, and its DEL needs the network it came from); the second, which adds the
result, is not: the result serves DEL and CHECK of a live attachment, which a power loss ends
(the namespace and the rules go with the reboot), and a DEL without it still releases the lease.
`cached_attachments()` lists the entries: at start-up, those of pods no sandbox row names are
DELed (orphans.py).

CHECK runs the plugins in order with the cached result (not for lists before 0.4.0 or with
disableCheck).

Plugins run with a timeout (60 s by default) in their own process group, killed as a group
when it passes. A plugin's error object (code, msg, details) becomes a CniError.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from pycri.common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, Unavailable
from pycri.sandbox.files import DnsConfig

log = structlog.get_logger("sandbox.cni")

DEFAULT_CONF_DIR = Path("/etc/cni/net.d")
DEFAULT_BIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
DEFAULT_CACHE_DIR = Path("/var/lib/pycri/cni/results")
DEFAULT_TIMEOUT = 60.0
DEFAULT_IFNAME = "eth0"
CONFIG_SUFFIXES = (".conflist", ".conf", ".json")
# network list versions pycri runs; results of every version up to 1.x are parsed
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CACHE_KIND = "pycri-cni-cache/1"

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_TYPE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_POD_ID = re.compile(r"^[0-9a-f]{64}-$")  # a sandbox id as pycri makes them, and the dash after it
_ARG_VALUE = re.compile(r"^[^;=\x00]*$")
_MAX_OUTPUT = 1 << 20

# well-known error codes of the spec
ERROR_CODES = {
    1: "incompatible CNI version",
    2: "unsupported field in network configuration",
    3: "container unknown or does not exist",
    4: "invalid necessary environment variables",
    5: "I/O failure",
    6: "failed to decode content",
    7: "invalid network config",
    11: "try again later",
}


# -- errors --------------------------------------------------------------------


class NetworkConfigError(FailedPrecondition):
    """The network configuration is missing, unreadable or invalid."""


class PluginNotFound(FailedPrecondition):
    """A plugin the network needs is not in any bin dir."""


class CniError(Unavailable):
    """A plugin failed: its error object (code, msg, details), or how it failed otherwise."""

    def __init__(self, plugin: str, command: str, msg: str, code: int = 0, details: str = "",
                 stderr: str = "") -> None:
        self.plugin = plugin
        self.command = command
        self.msg = msg
        self.code = code
        self.details = details
        self.stderr = stderr
        text = f"CNI plugin {plugin} {command} failed"
        if code:
            text += f" (code {code}{': ' + ERROR_CODES[code] if code in ERROR_CODES else ''})"
        text += f": {msg}"
        if details and details != msg:
            text += f" ({details})"
        if stderr and not code:
            text += f"; stderr: {stderr}"
        super().__init__(text)


class PluginTimeout(DeadlineExceeded, CniError):
    """A plugin did not finish in time and was killed."""


# -- configuration -------------------------------------------------------------


@dataclass(frozen=True)
class PluginConfig:
    """One plugin entry of a network list, as written in the file."""

    raw: Mapping[str, Any]

    @property
    def type(self) -> str:
        return str(self.raw["type"])

    @property
    def capabilities(self) -> frozenset[str]:
        caps = self.raw.get("capabilities") or {}
        return frozenset(k for k, v in caps.items() if v is True)

    @property
    def ipam_type(self) -> str:
        ipam = self.raw.get("ipam")
        return str(ipam.get("type", "")) if isinstance(ipam, Mapping) else ""


@dataclass(frozen=True)
class NetworkList:
    """A network configuration list: a name, a CNI version and plugins run in order."""

    name: str
    cni_version: str
    plugins: tuple[PluginConfig, ...]
    disable_check: bool = False
    source: str = ""  # the file it came from

    def to_json(self) -> dict[str, Any]:
        return {
            "cniVersion": self.cni_version, "name": self.name, "disableCheck": self.disable_check,
            "plugins": [dict(p.raw) for p in self.plugins],
        }

    def binaries(self) -> list[str]:
        """Every executable the list needs, plugins and their IPAM plugins, in order."""
        names: list[str] = []
        for plugin in self.plugins:
            for name in (plugin.type, plugin.ipam_type):
                if name and name not in names:
                    names.append(name)
        return names


def parse_network(data: bytes | str, source: str = "") -> NetworkList:
    """A network list from a *.conflist's JSON, or a single plugin's *.conf JSON (with `type`)."""
    where = f" in {source}" if source else ""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NetworkConfigError(f"invalid JSON{where}: {exc}") from None
    if not isinstance(doc, dict):
        raise NetworkConfigError(f"the network configuration{where} is not a JSON object")
    if "plugins" in doc:
        plugins = doc["plugins"]
        if not isinstance(plugins, list) or not plugins:
            raise NetworkConfigError(f"the network list{where} has no plugins")
    elif "type" in doc:  # a single plugin's configuration
        plugins = [{k: v for k, v in doc.items() if k not in ("name", "cniVersion")}]
    else:
        raise NetworkConfigError(f"the network configuration{where} has neither plugins nor a type")
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise NetworkConfigError(f"invalid or missing network name {name!r}{where}")
    version = doc.get("cniVersion")
    if not isinstance(version, str) or version not in SUPPORTED_VERSIONS:
        raise NetworkConfigError(
            f"unsupported cniVersion {version!r}{where}: pycri runs {', '.join(SUPPORTED_VERSIONS)}")
    disable_check = doc.get("disableCheck", False)
    if isinstance(disable_check, str):  # the spec writes it as a string
        disable_check = disable_check.lower() == "true"
    parsed = []
    for index, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            raise NetworkConfigError(f"plugin {index} of network {name!r}{where} is not a JSON object")
        kind = plugin.get("type")
        if not isinstance(kind, str) or not _TYPE.match(kind):
            raise NetworkConfigError(f"plugin {index} of network {name!r}{where} has an invalid type {kind!r}")
        caps = plugin.get("capabilities", {})
        if not isinstance(caps, dict):
            raise NetworkConfigError(f"plugin {kind!r} of network {name!r}{where}: capabilities is not an object")
        ipam = plugin.get("ipam")
        if ipam is not None and (not isinstance(ipam, dict) or not _TYPE.match(str(ipam.get("type", "")))):
            raise NetworkConfigError(f"plugin {kind!r} of network {name!r}{where}: ipam needs a valid type")
        parsed.append(PluginConfig(plugin))
    return NetworkList(name=name, cni_version=version, plugins=tuple(parsed), disable_check=bool(disable_check),
                       source=source)


def config_files(conf_dir: Path) -> list[Path]:
    """The configuration files in `conf_dir`, sorted by name."""
    try:
        entries = sorted(os.listdir(conf_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise NetworkConfigError(f"cannot read the CNI conf dir {conf_dir}: {exc}") from None
    return [conf_dir / e for e in entries if e.endswith(CONFIG_SUFFIXES) and (conf_dir / e).is_file()]


def load_network(conf_dir: Path) -> NetworkList:
    """The first valid network configuration in `conf_dir` (by file name)."""
    problems = []
    for path in config_files(conf_dir):
        try:
            return parse_network(path.read_bytes(), str(path))
        except (NetworkConfigError, OSError) as exc:
            log.warning("skipping an invalid CNI network configuration", path=str(path), error=str(exc))
            problems.append(str(exc))
    if problems:
        raise NetworkConfigError(f"no valid CNI network configuration in {conf_dir}: " + "; ".join(problems))
    raise NetworkConfigError(f"no CNI network configuration in {conf_dir}")


def find_plugin(kind: str, bin_dirs: Sequence[str | Path]) -> Path:
    """The executable for plugin `kind` in the first bin dir that has one."""
    if not _TYPE.match(kind):
        raise PluginNotFound(f"invalid CNI plugin name {kind!r}")
    for directory in bin_dirs:
        path = Path(directory) / kind
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise PluginNotFound(f"CNI plugin {kind!r} not found in {':'.join(str(d) for d in bin_dirs)}")


def missing_plugins(network: NetworkList, bin_dirs: Sequence[str | Path]) -> list[str]:
    missing = []
    for kind in network.binaries():
        try:
            find_plugin(kind, bin_dirs)
        except PluginNotFound:
            missing.append(kind)
    return missing


# -- what the runtime passes ---------------------------------------------------


@dataclass(frozen=True)
class PortMapping:
    """A hostPort mapping, the `portMappings` capability."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def to_cni(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"hostPort": self.host_port, "containerPort": self.container_port,
                                 "protocol": self.protocol.lower()}
        if self.host_ip:
            entry["hostIP"] = self.host_ip
        return entry


@dataclass(frozen=True)
class Bandwidth:
    """Traffic shaping in bits per second, the `bandwidth` capability (0: not limited)."""

    ingress_rate: int = 0
    ingress_burst: int = 0
    egress_rate: int = 0
    egress_burst: int = 0

    def to_cni(self) -> dict[str, int]:
        values = {"ingressRate": self.ingress_rate, "ingressBurst": self.ingress_burst,
                  "egressRate": self.egress_rate, "egressBurst": self.egress_burst}
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class Attachment:
    """One pod interface on the network: who it is and the runtime values for its plugins."""

    container_id: str  # the pod sandbox id
    netns: str  # path of the pinned network namespace; "" when it is gone (DEL only)
    ifname: str = DEFAULT_IFNAME
    pod_namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    port_mappings: tuple[PortMapping, ...] = ()
    dns: DnsConfig | None = None
    bandwidth: Bandwidth | None = None
    # other capabilities by their CNI name (e.g. "ipRanges", "mac", "cgroupPath")
    capability_args: Mapping[str, Any] = field(default_factory=dict)

    def runtime_values(self) -> dict[str, Any]:
        """Every capability value the runtime has for this attachment, by capability name."""
        values: dict[str, Any] = {}
        if self.port_mappings:
            values["portMappings"] = [p.to_cni() for p in self.port_mappings]
        if self.dns is not None and not self.dns.is_empty():
            values["dns"] = {"servers": list(self.dns.servers), "searches": list(self.dns.searches),
                             "options": list(self.dns.options)}
        if self.bandwidth is not None and self.bandwidth.to_cni():
            values["bandwidth"] = self.bandwidth.to_cni()
        values.update({k: v for k, v in self.capability_args.items() if v not in (None, [], {}, "")})
        return values


def cni_args(attachment: Attachment) -> str:
    """CNI_ARGS with the pod's identity, the keys kubelet-era plugins know."""
    pairs = [
        ("K8S_POD_NAMESPACE", attachment.pod_namespace),
        ("K8S_POD_NAME", attachment.pod_name),
        ("K8S_POD_INFRA_CONTAINER_ID", attachment.container_id),
        ("K8S_POD_UID", attachment.pod_uid),
    ]
    for key, value in pairs:
        if not _ARG_VALUE.match(value):
            raise InvalidArgument(f"{key} {value!r} cannot be passed in CNI_ARGS (it has ';' or '=')")
    return ";".join(f"{k}={v}" for k, v in pairs) + ";IgnoreUnknown=1"


def runtime_config(plugin: PluginConfig, values: Mapping[str, Any]) -> dict[str, Any]:
    """The runtimeConfig for `plugin`: the values of the capabilities it declares, only those."""
    return {name: values[name] for name in sorted(plugin.capabilities) if name in values}


def plugin_stdin(network: NetworkList, plugin: PluginConfig, prev_result: Mapping[str, Any] | None,
                 values: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration a plugin reads on stdin."""
    conf = {k: v for k, v in plugin.raw.items() if k not in ("prevResult",)}
    conf["name"] = network.name
    conf["cniVersion"] = network.cni_version
    rc = runtime_config(plugin, values)
    if rc:
        conf["runtimeConfig"] = {**(conf.get("runtimeConfig") or {}), **rc}
    if prev_result is not None:
        conf["prevResult"] = prev_result
    return conf


# -- results -------------------------------------------------------------------


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""  # the netns path for interfaces inside the pod


@dataclass(frozen=True)
class IPConfig:
    address: str  # CIDR, e.g. 10.88.0.5/16
    gateway: str = ""
    interface: int | None = None  # index into the result's interfaces

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    @property
    def version(self) -> int:
        return ipaddress.ip_interface(self.address).version


@dataclass(frozen=True)
class Route:
    dst: str
    gw: str = ""


@dataclass(frozen=True)
class Dns:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkResult:
    """A plugin list's result. `ips` are the pod's addresses, IPv4 first (the primary), no prefix."""

    cni_version: str
    interfaces: tuple[Interface, ...]
    ips: tuple[str, ...]
    ip_configs: tuple[IPConfig, ...]
    routes: tuple[Route, ...]
    dns: Dns
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)


def parse_result(raw: Mapping[str, Any], plugin: str = "result") -> NetworkResult:
    """Parse a result of any CNI version: 0.3.x/0.4.0/1.x (`ips`) or 0.1.0/0.2.0 (`ip4`/`ip6`)."""
    try:
        return _parse_result(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CniError(plugin, "ADD", f"invalid result: {exc!r}") from None


def _parse_result(raw: Mapping[str, Any]) -> NetworkResult:
    version = str(raw.get("cniVersion", ""))
    interfaces = tuple(
        Interface(name=str(i.get("name", "")), mac=str(i.get("mac", "")), sandbox=str(i.get("sandbox", "")))
        for i in raw.get("interfaces") or [])
    routes: list[Route] = [Route(str(r["dst"]), str(r.get("gw", ""))) for r in raw.get("routes") or []]
    configs: list[IPConfig] = []
    if "ip4" in raw or "ip6" in raw:  # 0.1.0 / 0.2.0
        for key in ("ip4", "ip6"):
            section = raw.get(key)
            if section:
                configs.append(IPConfig(str(section["ip"]), str(section.get("gateway", ""))))
                routes += [Route(str(r["dst"]), str(r.get("gw", ""))) for r in section.get("routes") or []]
    for entry in raw.get("ips") or []:
        index = entry.get("interface")
        configs.append(IPConfig(str(entry["address"]), str(entry.get("gateway", "")),
                                int(index) if index is not None else None))
    for c in configs:
        ipaddress.ip_interface(c.address)  # raises ValueError when invalid
    dns_raw = raw.get("dns") or {}
    dns = Dns(tuple(dns_raw.get("nameservers") or ()), str(dns_raw.get("domain", "")),
              tuple(dns_raw.get("search") or ()), tuple(dns_raw.get("options") or ()))
    return NetworkResult(version, interfaces, tuple(pod_ips(configs, interfaces)), tuple(configs), tuple(routes),
                         dns, raw)


def pod_ips(configs: Iterable[IPConfig], interfaces: Sequence[Interface]) -> list[str]:
    """The addresses on the pod's side: those of sandbox interfaces (or with no interface given)."""
    chosen: list[IPConfig] = []
    for config in configs:
        index = config.interface
        if index is not None and 0 <= index < len(interfaces) and not interfaces[index].sandbox:
            continue  # an address on a host-side interface
        chosen.append(config)
    ordered = [c.ip for c in chosen if c.version == 4] + [c.ip for c in chosen if c.version == 6]
    return list(dict.fromkeys(ordered))


# -- running plugins -----------------------------------------------------------


def is_idle_portmap(plugin: PluginConfig, command: str, prev: Mapping[str, Any] | None,
                    values: Mapping[str, Any]) -> bool:
    """Whether `plugin` is a chained portmap given no port mappings, which pycri need not exec:
    then portmap's ADD prints its prevResult as it came (in the list's version, which it has
    already) and its DEL and CHECK do nothing (containernetworking/plugins' portmap, v1.0 to
    v1.9: `if len(netConf.RuntimeConfig.PortMaps) == 0`). Most pods map no host port, and the
    exec cost ~2-3 ms of every RunPodSandbox and StopPodSandbox. Without a prevResult an ADD
    still runs, so that a portmap first in its list fails as it would."""
    return (plugin.type == "portmap" and not runtime_config(plugin, values).get("portMappings")
            and (command != "ADD" or prev is not None))


def plugin_env(command: str, attachment: Attachment, bin_dirs: Sequence[str | Path], netns: str,
               base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a plugin run: the daemon's (PATH for iptables, ...) plus the CNI_ variables."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("CNI_")}
    env.update({
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": attachment.container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": attachment.ifname,
        "CNI_ARGS": cni_args(attachment),
        "CNI_PATH": os.pathsep.join(str(d) for d in bin_dirs),
    })
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


def exec_plugin(path: Path, command: str, env: Mapping[str, str], stdin: Mapping[str, Any],
                timeout: float) -> dict[str, Any] | None:
    """Run one plugin; return its JSON result (None when it printed nothing), or raise CniError."""
    kind = path.name
    started = time.monotonic()
    try:
        proc = subprocess.Popen([str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(env), cwd="/", start_new_session=True, close_fds=True)
    except OSError as exc:
        raise CniError(kind, command, f"cannot run {path}: {exc}") from None
    try:
        out, err = proc.communicate(json.dumps(stdin).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise PluginTimeout(kind, command, f"no answer in {timeout:g} s: killed") from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    log.debug("ran a CNI plugin", plugin=kind, command=command, rc=proc.returncode,
              seconds=round(time.monotonic() - started, 3))
    stderr = err[-2000:].decode(errors="replace").strip()
    if proc.returncode != 0:
        raise _plugin_error(kind, command, out, stderr, proc.returncode)
    if not out.strip():
        return None
    try:
        result = json.loads(out[:_MAX_OUTPUT])
    except ValueError as exc:
        raise CniError(kind, command, f"its output is not JSON: {exc}", stderr=stderr) from None
    if not isinstance(result, dict):
        raise CniError(kind, command, "its output is not a JSON object", stderr=stderr)
    return result


def _plugin_error(kind: str, command: str, out: bytes, stderr: str, rc: int) -> CniError:
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and ("code" in doc or "msg" in doc):
        code = doc.get("code")
        return CniError(kind, command, str(doc.get("msg", "")) or "(no message)",
                        code=int(code) if isinstance(code, int) else 0, details=str(doc.get("details", "")),
                        stderr=stderr)
    detail = stderr or out[-2000:].decode(errors="replace").strip() or "(no output)"
    return CniError(kind, command, f"exit status {rc}: {detail}")


# -- the client ----------------------------------------------------------------


@dataclass(frozen=True)
class NetworkStatus:
    """For the CRI NetworkReady condition."""

    ready: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class CacheEntry:
    network: NetworkList
    attachment_values: Mapping[str, Any]  # the runtime values given at ADD
    netns: str
    result: Mapping[str, Any] | None  # None: ADD did not finish


@dataclass(frozen=True)
class CachedAttachment:
    """A cache entry and who it is for, as its file name says."""

    container_id: str
    ifname: str
    path: Path
    entry: CacheEntry


class CniClient:
    """Attach pods to the CNI network of a conf dir, and detach them."""

    def __init__(
        self,
        conf_dir: Path = DEFAULT_CONF_DIR,
        bin_dirs: Sequence[str | Path] = DEFAULT_BIN_DIRS,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.conf_dir = Path(conf_dir)
        self.bin_dirs = [str(d) for d in bin_dirs]
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout

    # -- configuration

    def network(self) -> NetworkList:
        """The network now configured (read again on every call: the conf dir may change)."""
        return load_network(self.conf_dir)

    def status(self) -> NetworkStatus:
        try:
            network = self.network()
        except NetworkConfigError as exc:
            return NetworkStatus(False, "NetworkPluginNotReady", f"network plugin not ready: {exc}")
        missing = missing_plugins(network, self.bin_dirs)
        if missing:
            return NetworkStatus(False, "NetworkPluginNotReady",
                                 f"network {network.name!r} ({network.source}) needs CNI plugins not found in "
                                 f"{':'.join(self.bin_dirs)}: {', '.join(missing)}")
        return NetworkStatus(True)

    # -- ADD / DEL / CHECK

    def add(self, attachment: Attachment, network: NetworkList | None = None) -> NetworkResult:
        """Attach; on any failure run DEL for the whole list and re-raise."""
        network = network or self.network()
        _check_attachment(attachment)
        if not attachment.netns:
            raise InvalidArgument("CNI ADD needs the path of the pod's network namespace")
        for kind in network.binaries():
            find_plugin(kind, self.bin_dirs)
        values = attachment.runtime_values()
        cache = self.cache_path(network.name, attachment.container_id, attachment.ifname)
        prev: dict[str, Any] | None = None
        try:
            self._write_cache(cache, network, values, attachment.netns, None)
            for plugin in network.plugins:
                result = self._run(plugin, "ADD", network, attachment, attachment.netns, prev, values)
                if result is None:
                    raise CniError(plugin.type, "ADD", "it printed no result")
                prev = result
            assert prev is not None
            parsed = parse_result(prev, network.plugins[-1].type)
            self._write_cache(cache, network, values, attachment.netns, prev, durable=False)
        except BaseException as exc:
            self._rollback(network, attachment, values, prev, exc)
            with contextlib.suppress(FileNotFoundError):
                cache.unlink()
            raise
        log.info("attached a pod to the CNI network", network=network.name, container_id=attachment.container_id,
                 ips=list(parsed.ips))
        return parsed

    def delete(self, attachment: Attachment, network: NetworkList | None = None) -> None:
        """Detach; succeeds when already detached. Uses the cached network and result when there are."""
        _check_attachment(attachment)
        entry = self._find_cache(attachment, network)
        if entry is not None:
            network, values, prev = entry.network, dict(entry.attachment_values), entry.result
        else:
            if network is None:
                try:
                    network = self.network()
                except NetworkConfigError as exc:
                    log.warning("CNI DEL without a cached result or a network config: nothing to do",
                                container_id=attachment.container_id, error=str(exc))
                    return
            values, prev = attachment.runtime_values(), None
        values = {**values, **attachment.runtime_values()}
        netns = attachment.netns or (entry.netns if entry is not None else "")
        netns = netns if netns and _is_netns(netns) else ""  # gone: plugins clean up the host side only
        self._delete(network, attachment, netns, prev, values, best_effort=False)
        with contextlib.suppress(FileNotFoundError):
            self.cache_path(network.name, attachment.container_id, attachment.ifname).unlink()
        log.info("detached a pod from the CNI network", network=network.name, container_id=attachment.container_id)

    def check(self, attachment: Attachment, network: NetworkList | None = None) -> None:
        """CHECK the attachment against its cached result (nothing for 0.3.x lists or disableCheck)."""
        _check_attachment(attachment)
        entry = self._find_cache(attachment, network)
        if entry is None or entry.result is None:
            raise FailedPrecondition(f"no CNI result cached for container {attachment.container_id}: not attached")
        network = entry.network
        if network.disable_check or _version(network.cni_version) < (0, 4, 0):
            return
        values = dict(entry.attachment_values)
        for plugin in network.plugins:
            self._run(plugin, "CHECK", network, attachment, attachment.netns, entry.result, values)

    def cached(self, network_name: str, container_id: str, ifname: str = DEFAULT_IFNAME) -> CacheEntry | None:
        return _read_cache(self.cache_path(network_name, container_id, ifname))

    def cache_path(self, network_name: str, container_id: str, ifname: str) -> Path:
        return self.cache_dir / f"{network_name}-{container_id}-{ifname}"

    def cached_attachments(self) -> list[CachedAttachment]:
        """Every readable entry of the cache, with the container id and interface its name holds
        (`<network>-<container id>-<ifname>`: the network's name comes from the entry itself, and
        a 64-hex-digit id is taken whole, so dashes in either name split right). Unreadable
        entries and temporary files are skipped."""
        try:
            names = sorted(os.listdir(self.cache_dir))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if name.startswith("."):  # a write that a crash cut short (mkstemp's file)
                continue
            path = self.cache_dir / name
            entry = _read_cache(path)
            if entry is None or not name.startswith(entry.network.name + "-"):
                continue
            rest = name[len(entry.network.name) + 1:]
            if _POD_ID.match(rest[:65]):  # a pycri sandbox id: the rest is the interface, dashes and all
                container_id, ifname = rest[:64], rest[65:]
            else:
                container_id, _, ifname = rest.rpartition("-")
            if container_id and ifname and _NAME.match(container_id):
                found.append(CachedAttachment(container_id, ifname, path, entry))
        return found

    # -- internals

    def _run(self, plugin: PluginConfig, command: str, network: NetworkList, attachment: Attachment, netns: str,
             prev: Mapping[str, Any] | None, values: Mapping[str, Any]) -> dict[str, Any] | None:
        if is_idle_portmap(plugin, command, prev, values):
            return dict(prev) if prev is not None and command == "ADD" else None
        path = find_plugin(plugin.type, self.bin_dirs)
        env = plugin_env(command, attachment, self.bin_dirs, netns)
        return exec_plugin(path, command, env, plugin_stdin(network, plugin, prev, values), self.timeout)

    def _delete(self, network: NetworkList, attachment: Attachment, netns: str, prev: Mapping[str, Any] | None,
                values: Mapping[str, Any], best_effort: bool) -> list[Exception]:
        errors: list[Exception] = []
        for plugin in reversed(network.plugins):
            try:
                self._run(plugin, "DEL", network, attachment, netns, prev, values)
            except (CniError, PluginNotFound) as exc:
                if not best_effort:
                    raise
                errors.append(exc)
        return errors

    def _rollback(self, network: NetworkList, attachment: Attachment, values: Mapping[str, Any],
                  prev: Mapping[str, Any] | None, cause: BaseException) -> None:
        log.warning("CNI ADD failed: rolling back with DEL", network=network.name,
                    container_id=attachment.container_id, error=str(cause))
        errors = self._delete(network, attachment, attachment.netns, prev, values, best_effort=True)
        for exc in errors:
            log.error("CNI DEL of a failed ADD failed", network=network.name, container_id=attachment.container_id,
                      error=str(exc))
            cause.add_note(f"rolling back: {exc}")

    def _find_cache(self, attachment: Attachment, network: NetworkList | None) -> CacheEntry | None:
        names = [network.name] if network is not None else []
        if not names:
            with contextlib.suppress(NetworkConfigError):
                names.append(self.network().name)
        for name in names:
            entry = self.cached(name, attachment.container_id, attachment.ifname)
            if entry is not None:
                return entry
        # the network may have been renamed since ADD: look for any network's entry of this container
        suffix = f"-{attachment.container_id}-{attachment.ifname}"
        if self.cache_dir.is_dir():
            for path in sorted(self.cache_dir.iterdir()):
                if path.name.endswith(suffix):
                    entry = _read_cache(path)
                    if entry is not None:
                        return entry
        return None

    def _write_cache(self, path: Path, network: NetworkList, values: Mapping[str, Any], netns: str,
                     result: Mapping[str, Any] | None, durable: bool = True) -> None:
        doc = {"kind": CACHE_KIND, "network": network.to_json(), "source": network.source,
               "runtimeValues": dict(values), "netns": netns, "result": result}
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _read_cache(path: Path) -> CacheEntry | None:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring an unreadable CNI cache entry", path=str(path), error=str(exc))
        return None
    if not isinstance(doc, dict) or doc.get("kind") != CACHE_KIND:
        log.warning("ignoring a CNI cache entry of an unknown kind", path=str(path))
        return None
    try:
        network = parse_network(json.dumps(doc["network"]), str(doc.get("source", "")))
    except (KeyError, NetworkConfigError) as exc:
        log.warning("ignoring a CNI cache entry with a bad network", path=str(path), error=str(exc))
        return None
    result = doc.get("result")
    return CacheEntry(network, dict(doc.get("runtimeValues") or {}), str(doc.get("netns", "")),
                      result if isinstance(result, dict) else None)


def _check_attachment(attachment: Attachment) -> None:
    if not attachment.container_id or not _NAME.match(attachment.container_id):
        raise InvalidArgument(f"invalid CNI container id {attachment.container_id!r}")
    if not attachment.ifname or len(attachment.ifname) > 15 or "/" in attachment.ifname or \
            any(c.isspace() for c in attachment.ifname):
        raise InvalidArgument(f"invalid interface name {attachment.ifname!r}")


def _is_netns(path: str) -> bool:
    from pycri.sandbox.namespaces import is_pinned

    return is_pinned(Path(path))


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple(parts + [0] * (3 - len(parts)))
