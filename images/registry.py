"""A client of the Docker / OCI Distribution API v2: manifests and blobs, with auth.

Auth follows the registry's challenge: a 401 with `WWW-Authenticate: Basic` is
answered with the credentials, one with `Bearer realm=...,service=...,scope=...`
with a token from the realm (GET with basic credentials, or the OAuth2 refresh
grant for an identity token). A registry token given by the client is used as the
bearer token directly. Tokens are cached per (realm, service, scope).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
import http.client
from http.client import HTTPResponse
from typing import BinaryIO

from pycri.common.errors import DataLoss, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted, Unavailable

USER_AGENT = "pycri/0.1"
TIMEOUT_SECONDS = 30.0
# The largest manifest or index pycri reads (what registries commonly accept on push); a
# larger document is refused before it is read, and never read past this size.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""  # an OAuth2 refresh token
    registry_token: str = ""  # a bearer token to send as it is
    # the registry host the credentials were issued for (CRI AuthConfig.server_address);
    # "" for the registry of the image's name
    server_address: str = ""

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)


@dataclass(frozen=True)
class Endpoint:
    """Where a registry is served: `base_url` is scheme://host[:port]; `prefix` is put
    before every repository path (a mirror that serves several registries by path)."""

    base_url: str
    prefix: str = ""
    mirror: bool = False

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.base_url).netloc

    def repository_path(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def __str__(self) -> str:
        return f"{self.base_url}/{self.prefix}" if self.prefix else self.base_url


@dataclass(frozen=True)
class FetchedManifest:
    data: bytes
    media_type: str
    digest: str


_TOKEN = re.compile(r"[\x21-\x7e]{1,65536}")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="r",service="s"` -> ("bearer", {"realm": "r", "service": "s"})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


class _NoAuthOnCrossHostRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects (blob storage), but never send registry credentials to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not _same_origin_or_upgrade(req.full_url, newurl):
            new.remove_header("Authorization")
        return new


def _same_origin_or_upgrade(old: str, new: str) -> bool:
    """Whether a redirect from `old` to `new` may keep the Authorization header: the same host
    and port, and no step down from https to http."""
    a, b = urllib.parse.urlsplit(old), urllib.parse.urlsplit(new)
    return a.netloc.lower() == b.netloc.lower() and not (a.scheme == "https" and b.scheme != "https")


_opener = urllib.request.build_opener(_NoAuthOnCrossHostRedirect())


@dataclass
class _TokenCache:
    tokens: dict[tuple[str, str, str, Credentials], tuple[str, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: tuple[str, str, str, Credentials]) -> str | None:
        with self.lock:
            entry = self.tokens.get(key)
            if entry and entry[1] > time.monotonic():
                return entry[0]
            return None

    def put(self, key: tuple[str, str, str, Credentials], token: str, expires_in: float) -> None:
        with self.lock:
            self.tokens[key] = (token, time.monotonic() + max(expires_in - 10, 10))


_token_cache = _TokenCache()


class Repository:
    """One repository on one endpoint, with the credentials to use there."""

    def __init__(self, endpoint: Endpoint, path: str, credentials: Credentials | None = None,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.endpoint = endpoint
        self.path = endpoint.repository_path(path)
        self.credentials = credentials or Credentials()
        self.timeout = timeout
        self._authorization: str | None = None

    # -- public API ---------------------------------------------------------

    def get_manifest(self, target: str, accept: list[str], max_bytes: int = MAX_MANIFEST_BYTES) -> FetchedManifest:
        """Fetch the manifest for a tag or digest; verify it against the digest if one was asked for.
        A manifest larger than `max_bytes` is refused: by its Content-Length before it is read,
        and whatever the server says, no more than `max_bytes` + 1 bytes are read."""
        response = self._request("GET", f"manifests/{target}", {"Accept": ", ".join(accept)}, what=f"manifest {target}")
        too_large = ResourceExhausted(
            f"manifest {target} from {self.endpoint} is larger than the {max_bytes} bytes pycri accepts")
        with response:
            if _content_length(response) > max_bytes:
                raise too_large
            data = response.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise too_large
            media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if target.startswith("sha256:") and digest != target:
            raise DataLoss(f"manifest from {self.endpoint} does not match its digest {target} (got {digest})")
        try:
            declared = json.loads(data).get("mediaType")
        except (ValueError, AttributeError, RecursionError) as exc:
            raise DataLoss(f"manifest {target} from {self.endpoint} is not valid JSON") from exc
        return FetchedManifest(data=data, media_type=declared if isinstance(declared, str) and declared else media_type,
                               digest=digest)

    def open_blob(self, digest: str, size: int | None = None) -> "BlobReader":
        """Open the blob for reading; the caller verifies its digest while reading. With the
        `size` of its descriptor, a response that announces more is refused before it is read."""
        response = self._request("GET", f"blobs/{digest}", {}, what=f"blob {digest}")
        if size is not None and _content_length(response) > size:
            length = _content_length(response)
            response.close()
            raise DataLoss(f"blob {digest} from {self.endpoint.host} is {length} bytes, its descriptor says {size}")
        return BlobReader(response, f"blob {digest} from {self.endpoint.host}")

    # -- transport and auth -------------------------------------------------

    def _url(self, suffix: str) -> str:
        return f"{self.endpoint.base_url}/v2/{self.path}/{suffix}"

    def _request(self, method: str, suffix: str, headers: dict[str, str], *, what: str) -> HTTPResponse:
        url = self._url(suffix)
        for attempt in range(2):
            request = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT, **headers})
            if self._authorization:
                request.add_header("Authorization", self._authorization)
            try:
                return _opener.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 0 and self._authorize(exc.headers.get("WWW-Authenticate", "")):
                    exc.close()
                    continue
                raise self._http_error(exc, what) from None
            except (urllib.error.URLError, OSError, socket.timeout) as exc:
                reason = getattr(exc, "reason", exc)
                raise Unavailable(f"registry {self.endpoint.host} is unreachable: {reason}") from None
        raise PermissionDenied(f"registry {self.endpoint.host} refused the credentials for {self.path}")

    def _http_error(self, exc: urllib.error.HTTPError, what: str) -> Exception:
        body = exc.read(4096).decode("utf-8", "replace")
        exc.close()
        codes = " ".join(e.get("code", "") for e in _errors_of(body))
        where = f"{self.endpoint.host}/{self.path}"
        if exc.code == 404:
            return NotFound(f"{what} not found in {where}")
        if exc.code in (401, 403):
            return PermissionDenied(f"registry {self.endpoint.host} denied access to {self.path}: HTTP {exc.code} {codes}".strip())
        if exc.code == 400:
            return InvalidArgument(f"registry {where} rejected the request for {what}: {codes or body[:200]}")
        return Unavailable(f"registry {where} answered HTTP {exc.code} for {what} {codes}".strip())

    def _authorize(self, challenge: str) -> bool:
        """Set the Authorization header for a 401 challenge; False if there is nothing to try."""
        scheme, params = parse_challenge(challenge)
        creds = self.credentials
        if scheme == "basic":
            if not (creds.username or creds.password):
                return False
            raw = f"{creds.username}:{creds.password}".encode()
            self._authorization = "Basic " + base64.b64encode(raw).decode()
            return True
        if scheme == "bearer":
            if creds.registry_token:
                if not _TOKEN.fullmatch(creds.registry_token):
                    raise InvalidArgument("auth.registry_token holds spaces or control characters")
                self._authorization = f"Bearer {creds.registry_token}"
                return True
            realm = params.get("realm")
            if not realm:
                return False
            scope = params.get("scope") or f"repository:{self.path}:pull"
            self._authorization = f"Bearer {self._token(realm, params.get('service', ''), scope)}"
            return True
        return False

    def _token(self, realm: str, service: str, scope: str) -> str:
        key = (realm, service, scope, self.credentials)
        cached = _token_cache.get(key)
        if cached:
            return cached
        creds = self.credentials
        if creds.identity_token:
            form = urllib.parse.urlencode({
                "grant_type": "refresh_token", "refresh_token": creds.identity_token,
                "service": service, "scope": scope, "client_id": "pycri",
            }).encode()
            request = urllib.request.Request(realm, data=form, method="POST", headers={"User-Agent": USER_AGENT})
        else:
            query = urllib.parse.urlencode({"service": service, "scope": scope})
            request = urllib.request.Request(f"{realm}?{query}", headers={"User-Agent": USER_AGENT})
            if creds.username or creds.password:
                raw = f"{creds.username}:{creds.password}".encode()
                request.add_header("Authorization", "Basic " + base64.b64encode(raw).decode())
        host = urllib.parse.urlsplit(realm).netloc
        if not creds.empty and not self._may_send_credentials_to(realm):
            raise PermissionDenied(
                f"registry {self.endpoint.host} names the token server {realm!r}: plain http to another host "
                "or from an https registry; pycri does not send the credentials there")
        try:
            with _opener.open(request, timeout=self.timeout) as response:
                answer = json.loads(response.read(1024 * 1024))
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in (401, 403):
                raise PermissionDenied(f"token server {host} refused the credentials for {self.path} (HTTP {exc.code})") from None
            raise Unavailable(f"token server {host} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError, RecursionError) as exc:
            raise Unavailable(f"token server {host} is unreachable: {getattr(exc, 'reason', exc)}") from None
        token = (answer.get("token") or answer.get("access_token")) if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise Unavailable(f"token server {host} answered without a token")
        if not _TOKEN.fullmatch(token):  # it goes into a header: no spaces, no line breaks
            raise Unavailable(f"token server {host} answered with a malformed token")
        try:
            expires_in = float(answer.get("expires_in") or 60)
        except (TypeError, ValueError):
            expires_in = 60.0
        expires_in = min(expires_in, 24 * 3600.0) if expires_in == expires_in else 60.0  # nan, inf
        _token_cache.put(key, token, expires_in)
        return token

    def _may_send_credentials_to(self, realm: str) -> bool:
        """The realm is named by the registry the credentials are for (the caller only gives a
        Repository the credentials of its own host), so they may go there: over https, or over
        plain http only to the registry's own host (a realm on another host must not get them in
        clear text, as the registry itself would not)."""
        parts, registry = urllib.parse.urlsplit(realm), urllib.parse.urlsplit(self.endpoint.base_url)
        if parts.scheme == "https":
            return True
        return parts.scheme == registry.scheme == "http" and parts.hostname == registry.hostname


class BlobReader:
    """A blob download; a broken transfer raises Unavailable, not a bare socket error."""

    def __init__(self, response: HTTPResponse, what: str) -> None:
        self._response = response
        self._what = what

    def read(self, n: int = -1) -> bytes:
        try:
            return self._response.read(n)
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(f"transfer of {self._what} failed: {exc}") from None

    def read1(self, n: int = -1) -> bytes:
        """What has arrived, up to `n` bytes (at least one, unless the blob has ended)."""
        try:
            return self._response.read1(n)
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(f"transfer of {self._what} failed: {exc}") from None

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> "BlobReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _errors_of(body: str) -> list[dict[str, str]]:
    try:
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError):
        return []
    return [e for e in errors if isinstance(e, dict)]


def _content_length(response: HTTPResponse) -> int:
    """The length a response announces (-1 if none or not a number)."""
    try:
        return int(response.headers.get("Content-Length") or -1)
    except ValueError:
        return -1


def read_exactly(stream: BinaryIO, size: int) -> bytes:
    """Read `size` bytes (a config blob); fewer means the registry cut the transfer."""
    data = stream.read(size + 1)
    if len(data) != size:
        raise DataLoss(f"expected {size} bytes, got {len(data)}")
    return data
