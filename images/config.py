"""Registry settings: mirrors, plain-http hosts, credentials, and where to pull a name from."""
from __future__ import annotations

import fnmatch
import urllib.parse
from dataclasses import dataclass, field

from pycri.common.errors import InvalidArgument
from pycri.images.registry import Credentials, Endpoint

# The registry host behind a name differs from the name's domain for Docker Hub.
UPSTREAM_HOSTS = {"docker.io": "registry-1.docker.io"}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True)
class RegistryConfig:
    # domain -> mirror endpoints, tried in order before the domain itself
    mirrors: dict[str, list[str]] = field(default_factory=dict)
    # hosts (host or host:port) spoken to over plain http instead of https
    plain_http: list[str] = field(default_factory=list)
    # host -> credentials used when the client sends none
    auths: dict[str, Credentials] = field(default_factory=dict)
    # try the domain itself after its mirrors
    fall_back_to_upstream: bool = True
    max_concurrent_downloads: int = 3
    timeout_seconds: float = 30.0
    # decompression bombs: a layer may unpack (its tar stream) to at most this many bytes,
    # and to at most this many times its compressed size (0: no limit)
    max_layer_unpacked_bytes: int = 32 * 1024**3
    max_layer_expansion_ratio: int = 100

    def endpoints(self, domain: str) -> list[Endpoint]:
        """Where to look for a repository of `domain`: its mirrors first, then the registry itself."""
        endpoints = [parse_endpoint(url, mirror=True) for url in self.mirrors.get(domain, [])]
        if self.fall_back_to_upstream or not endpoints:
            host = UPSTREAM_HOSTS.get(domain, domain)
            endpoints.append(Endpoint(f"{self._scheme(host)}://{host}"))
        return endpoints

    def credentials_for(self, endpoint: Endpoint, given: Credentials, domain: str) -> Credentials:
        """The credentials to send to `endpoint` when pulling a name of `domain`: the client's
        if they were issued for that host (their server_address, or else the registry of
        `domain`), else the configured ones of that host. A mirror on another host gets none
        (CVE-2020-15157): credentials go only to the host they were issued for."""
        if not given.empty:
            issued_for = given.server_address or UPSTREAM_HOSTS.get(domain, domain)
            if same_host(issued_for, endpoint.host):
                return given
        return self.auths.get(endpoint.host, Credentials())

    def _scheme(self, host: str) -> str:
        bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host in self.plain_http or bare in self.plain_http or bare in LOOPBACK_HOSTS:
            return "http"
        return "https"


# names Docker Hub's registry goes by in credentials (docker's config keys it by its index URL)
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})


def host_of(address: str) -> str:
    """`https://index.docker.io/v1/` -> index.docker.io; `127.0.0.1:5001` stays; lower case."""
    address = address.strip()
    netloc = urllib.parse.urlsplit(address if "://" in address else f"//{address}").netloc
    return netloc.lower()


def same_host(address: str, host: str) -> bool:
    """Whether credentials for `address` (a server address as clients give it) belong to `host`."""
    a, b = host_of(address), host_of(host)
    if a in DOCKER_HUB_HOSTS and b in DOCKER_HUB_HOSTS:
        return True
    if "*" in a:  # kubelet's docker config keys may be globs: *.gcr.io, one label per '*'
        pattern, host_labels = a.split("."), b.split(".")
        return len(pattern) == len(host_labels) and all(
            fnmatch.fnmatchcase(label, glob) for label, glob in zip(host_labels, pattern))
    return bool(a) and a == b


def parse_endpoint(url: str, *, mirror: bool = False) -> Endpoint:
    """`http://127.0.0.1:5000/docker.io` -> base http://127.0.0.1:5000, prefix docker.io."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(f"registry endpoint {url!r} is not an http(s) URL")
    prefix = parts.path.strip("/")
    if prefix.startswith("v2"):
        prefix = prefix[2:].strip("/")
    return Endpoint(f"{parts.scheme}://{parts.netloc}", prefix, mirror)
