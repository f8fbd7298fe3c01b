"""pycri's configuration file (/etc/pycri/pycri.toml): parsing, defaults, and printing.

Every key is listed in docs/configuration.md. Unknown keys are an error, so a typo
never passes silently.
"""
from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycri.common.errors import InvalidArgument
from pycri.images.config import RegistryConfig, parse_endpoint
from pycri.images.registry import Credentials

DEFAULT_PATH = Path("/etc/pycri/pycri.toml")
CGROUP_DRIVERS = ("cgroupfs", "systemd")
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class RuntimeConfig:
    default_handler: str = "pycri"
    conmon: str = "/usr/bin/conmon"
    # handler name -> runtime binary with runc's command line; "" is pycri's own runtime
    handlers: dict[str, str] = field(default_factory=lambda: {"pycri": "", "runc": "/usr/bin/runc", "crun": "/usr/bin/crun"})


@dataclass(frozen=True)
class NetworkConfig:
    cni_conf_dir: Path = Path("/etc/cni/net.d")
    cni_bin_dirs: tuple[str, ...] = ("/opt/cni/bin", "/usr/lib/cni")
    # write pycri's default bridge network when the conf dir has none
    write_default: bool = True


@dataclass(frozen=True)
class StreamingConfig:
    address: str = "127.0.0.1"  # where the exec/attach/port-forward server listens
    port: int = 0  # 0: a free port chosen at start-up
    token_ttl_seconds: int = 60  # a URL from Exec/Attach/PortForward is good this long, once
    idle_timeout_seconds: int = 4 * 3600  # a session with no traffic this long is cut


@dataclass(frozen=True)
class Config:
    listen: str = "unix:///run/pycri/pycri.sock"
    root: Path = Path("/var/lib/pycri")
    state: Path = Path("/run/pycri")
    log_level: str = "info"
    log_format: str = "json"
    cgroup_driver: str = "cgroupfs"
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)

    @property
    def socket_path(self) -> Path:
        return Path(self.listen.removeprefix("unix://"))


def load(path: Path | None = None) -> Config:
    """Read `path` (the default file if None; defaults alone if that file does not exist)."""
    if path is None:
        path = DEFAULT_PATH
        if not path.exists():
            return Config()
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"cannot read config {path}: {exc}") from exc
    return from_dict(doc, str(path))


def from_dict(doc: dict[str, Any], where: str = "config") -> Config:
    reader = _Reader(doc, where)
    listen = reader.str("listen", Config.listen)
    if not listen.startswith("unix://"):
        raise InvalidArgument(f"{where}: listen must be a unix:// address, not {listen!r}")
    log = reader.table("log")
    cgroup = reader.table("cgroup")
    registry = reader.table("registry")
    runtime = reader.table("runtime")
    network = reader.table("network")
    streaming = reader.table("streaming")
    config = Config(
        listen=listen,
        root=Path(reader.str("root", str(Config.root))),
        state=Path(reader.str("state", str(Config.state))),
        log_level=log.choice("level", Config.log_level, LOG_LEVELS),
        log_format=log.choice("format", Config.log_format, LOG_FORMATS),
        cgroup_driver=cgroup.choice("driver", Config.cgroup_driver, CGROUP_DRIVERS),
        registry=_registry(registry),
        runtime=_runtime(runtime),
        network=NetworkConfig(
            cni_conf_dir=Path(network.str("cni_conf_dir", str(NetworkConfig.cni_conf_dir))),
            cni_bin_dirs=tuple(network.str_list("cni_bin_dirs", list(NetworkConfig.cni_bin_dirs))),
            write_default=network.bool("write_default", NetworkConfig.write_default),
        ),
        streaming=_streaming(streaming),
    )
    for r in (reader, log, cgroup, registry, runtime, network, streaming):
        r.finish()
    return config


def _runtime(reader: "_Reader") -> RuntimeConfig:
    defaults = RuntimeConfig()
    handlers_table = reader.table("handlers")
    handlers = dict(defaults.handlers)
    for name in list(handlers_table.doc):
        entry = handlers_table.table(name)
        handlers[name] = entry.str("path", "")
        entry.finish()
    handlers_table.finish()
    config = RuntimeConfig(
        default_handler=reader.str("default_handler", defaults.default_handler),
        conmon=reader.str("conmon", defaults.conmon),
        handlers=handlers,
    )
    if config.default_handler not in handlers:
        raise InvalidArgument(f"[runtime] default_handler {config.default_handler!r} is not a handler")
    return config


def _streaming(reader: "_Reader") -> StreamingConfig:
    defaults = StreamingConfig()
    config = StreamingConfig(
        address=reader.str("address", defaults.address),
        port=reader.int("port", defaults.port, 0),
        token_ttl_seconds=reader.int("token_ttl_seconds", defaults.token_ttl_seconds, 1),
        idle_timeout_seconds=reader.int("idle_timeout_seconds", defaults.idle_timeout_seconds, 1),
    )
    try:
        ipaddress.ip_address(config.address)
    except ValueError:
        raise InvalidArgument(f"{reader.where}: address must be an IP address, not {config.address!r}") from None
    if config.port > 65535:
        raise InvalidArgument(f"{reader.where}: port must be at most 65535")
    return config


def _registry(reader: "_Reader") -> RegistryConfig:
    defaults = RegistryConfig()
    mirrors_table = reader.table("mirrors")
    mirrors: dict[str, list[str]] = {}
    for domain in list(mirrors_table.doc):
        urls = mirrors_table.str_list(domain, [])
        for url in urls:
            parse_endpoint(url)  # validates
        mirrors[domain] = urls
    auths_table = reader.table("auths")
    auths: dict[str, Credentials] = {}
    for host in list(auths_table.doc):
        entry = auths_table.table(host)
        auths[host] = Credentials(
            username=entry.str("username", ""), password=entry.str("password", ""),
            identity_token=entry.str("identity_token", ""),
        )
        entry.finish()
    config = RegistryConfig(
        mirrors=mirrors,
        plain_http=reader.str_list("plain_http", defaults.plain_http),
        auths=auths,
        fall_back_to_upstream=reader.bool("fall_back_to_upstream", defaults.fall_back_to_upstream),
        max_concurrent_downloads=reader.int("max_concurrent_downloads", defaults.max_concurrent_downloads, 1),
        timeout_seconds=float(reader.int("timeout_seconds", int(defaults.timeout_seconds), 1)),
        max_layer_unpacked_bytes=reader.int("max_layer_unpacked_bytes", defaults.max_layer_unpacked_bytes, 0),
        max_layer_expansion_ratio=reader.int("max_layer_expansion_ratio", defaults.max_layer_expansion_ratio, 0),
    )
    mirrors_table.finish()
    auths_table.finish()
    return config


class _Reader:
    """Takes keys out of one TOML table, checking types; `finish()` rejects what is left."""

    def __init__(self, doc: dict[str, Any], where: str) -> None:
        self.doc = dict(doc)
        self.where = where

    def _take(self, key: str, default: Any, kind: type | tuple[type, ...]) -> Any:
        value = self.doc.pop(key, default)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidArgument(f"{self.where}: {key} has the wrong type ({type(value).__name__})")
        return value

    def str(self, key: str, default: str) -> str:
        return self._take(key, default, str)

    def bool(self, key: str, default: bool) -> bool:
        return self._take(key, default, bool)

    def int(self, key: str, default: int, minimum: int) -> int:
        value = self._take(key, default, int)
        if value < minimum:
            raise InvalidArgument(f"{self.where}: {key} must be at least {minimum}")
        return value

    def str_list(self, key: str, default: list[str]) -> list[str]:
        value = self._take(key, default, list)
        if not all(isinstance(v, str) for v in value):
            raise InvalidArgument(f"{self.where}: {key} must be a list of strings")
        return list(value)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.str(key, default)
        if value not in choices:
            raise InvalidArgument(f"{self.where}: {key} must be one of {', '.join(choices)}, not {value!r}")
        return value

    def table(self, key: str) -> "_Reader":
        return _Reader(self._take(key, {}, dict), f"{self.where}: [{key}]")

    def finish(self) -> None:
        if self.doc:
            raise InvalidArgument(f"{self.where}: unknown key(s) {', '.join(sorted(self.doc))}")


def to_toml(config: Config) -> str:
    """The effective configuration as TOML (passwords masked)."""
    reg = config.registry
    lines = [
        f"listen = {_q(config.listen)}",
        f"root = {_q(str(config.root))}",
        f"state = {_q(str(config.state))}",
        "",
        "[log]",
        f"level = {_q(config.log_level)}",
        f"format = {_q(config.log_format)}",
        "",
        "[cgroup]",
        f"driver = {_q(config.cgroup_driver)}",
        "",
        "[registry]",
        f"plain_http = [{', '.join(_q(h) for h in reg.plain_http)}]",
        f"fall_back_to_upstream = {str(reg.fall_back_to_upstream).lower()}",
        f"max_concurrent_downloads = {reg.max_concurrent_downloads}",
        f"timeout_seconds = {int(reg.timeout_seconds)}",
        f"max_layer_unpacked_bytes = {reg.max_layer_unpacked_bytes}",
        f"max_layer_expansion_ratio = {reg.max_layer_expansion_ratio}",
        "",
        "[registry.mirrors]",
        *[f"{_q(domain)} = [{', '.join(_q(u) for u in urls)}]" for domain, urls in sorted(reg.mirrors.items())],
        "",
        "[runtime]",
        f"default_handler = {_q(config.runtime.default_handler)}",
        f"conmon = {_q(config.runtime.conmon)}",
        *[line for name, path in sorted(config.runtime.handlers.items())
          for line in ("", f"[runtime.handlers.{_q(name)}]", f"path = {_q(path)}")],
        "",
        "[network]",
        f"cni_conf_dir = {_q(str(config.network.cni_conf_dir))}",
        f"cni_bin_dirs = [{', '.join(_q(d) for d in config.network.cni_bin_dirs)}]",
        f"write_default = {str(config.network.write_default).lower()}",
        "",
        "[streaming]",
        f"address = {_q(config.streaming.address)}",
        f"port = {config.streaming.port}",
        f"token_ttl_seconds = {config.streaming.token_ttl_seconds}",
        f"idle_timeout_seconds = {config.streaming.idle_timeout_seconds}",
    ]
    for host, creds in sorted(reg.auths.items()):
        lines += ["", f"[registry.auths.{_q(host)}]", f"username = {_q(creds.username)}",
                  f"password = {_q('*' * 8 if creds.password else '')}"]
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
