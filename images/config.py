"""Registry settings: mirrors, plain-http hosts, credentials, and where to pull a name from."""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from common.errors import InvalidArgument
from images.registry import Credentials, Endpoint

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

    def endpoints(self, domain: str) -> list[Endpoint]:
        """Where to look for a repository of `domain`: its mirrors first, then the registry itself."""
        endpoints = [parse_endpoint(url, mirror=True) for url in self.mirrors.get(domain, [])]
        if self.fall_back_to_upstream or not endpoints:
            host = UPSTREAM_HOSTS.get(domain, domain)
            endpoints.append(Endpoint(f"{self._scheme(host)}://{host}"))
        return endpoints

    def credentials_for(self, endpoint: Endpoint, given: Credentials) -> Credentials:
        return given if not given.empty else self.auths.get(endpoint.host, Credentials())

    def _scheme(self, host: str) -> str:
        bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host in self.plain_http or bare in self.plain_http or bare in LOOPBACK_HOSTS:
            return "http"
        return "https"


def parse_endpoint(url: str, *, mirror: bool = False) -> Endpoint:
    """`http://127.0.0.1:5000/docker.io` -> base http://127.0.0.1:5000, prefix docker.io."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(f"registry endpoint {url!r} is not an http(s) URL")
    prefix = parts.path.strip("/")
    if prefix.startswith("v2"):
        prefix = prefix[2:].strip("/")
    return Endpoint(f"{parts.scheme}://{parts.netloc}", prefix, mirror)
