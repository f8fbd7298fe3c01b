#!/usr/bin/env python3
"""Docker registry token server for pycri's test registries.

A small implementation of the Docker registry token authentication spec
(distribution's docs/spec/auth/token.md, jwt.md and oauth.md), serving the
token-auth test registry (hack/registry.sh, port 5002).

Endpoints:
  GET  /token?service=S&scope=repository:NAME:pull,push[&scope=...]
       HTTP basic auth -> 200 {"token", "access_token", "expires_in", "issued_at"}
  POST /token  (application/x-www-form-urlencoded, OAuth2 password grant:
       grant_type=password, username, password, service, scope (space separated))
       -> 200 {"access_token", "token", "expires_in", "issued_at", "scope"}
  GET  /healthz -> 200 "ok"
Wrong or missing credentials get 401.

Every authenticated user is granted every action it asks for. Tokens are JWTs
signed RS256 with a key whose self-signed certificate is the registry's
`rootcertbundle`; the JWT header carries the certificate in `x5c` (base64 DER),
which distribution verifies against that bundle, and also the libtrust-style
`kid` of the key. The key and certificate are created in the state directory on
first start (or by `--init`) if missing.

Only the standard library and `cryptography` are used.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import sys
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

LOG = logging.getLogger("token_server")

KEY_FILE = "token.key"
CERT_FILE = "token.crt"
MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Config:
    """What the server needs to authenticate clients and sign tokens."""

    service: str
    issuer: str
    username: str
    password: str
    ttl: int


@dataclass(frozen=True)
class Signer:
    """The signing key and the JWT header that goes with it."""

    key: rsa.RSAPrivateKey
    header: dict[str, Any]


class AuthError(Exception):
    """Credentials are missing or wrong (HTTP 401)."""


class RequestError(Exception):
    """The request is malformed (HTTP 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- key material


def b64url(data: bytes) -> str:
    """Base64url without padding, as JOSE wants it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key: rsa.RSAPublicKey) -> str:
    """The libtrust key id: 240 bits of SHA-256(SPKI DER), base32, in groups of 4."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def make_key_and_cert() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A fresh RSA-2048 key and a self-signed certificate for it (10 years)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pycri-test-token-signer")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def ensure_key_material(state_dir: Path) -> tuple[Path, Path]:
    """Create the key and certificate in state_dir unless both already exist."""
    state_dir.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = state_dir / KEY_FILE, state_dir / CERT_FILE
    if key_path.exists() and cert_path.exists():
        return key_path, cert_path
    key, cert = make_key_and_cert()
    write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    tmp = cert_path.with_suffix(".crt.tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, cert_path)
    LOG.info("created signing key %s and certificate %s", key_path, cert_path)
    return key_path, cert_path


def load_signer(state_dir: Path) -> Signer:
    """Load (creating if needed) the key and build the JWT header for it."""
    key_path, cert_path = ensure_key_material(state_dir)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SystemExit(f"{key_path}: not an RSA key")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    header = {
        "typ": "JWT",
        "alg": "RS256",
        "kid": libtrust_key_id(key.public_key()),
        # x5c entries are standard base64 (not base64url) DER, leaf first.
        "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")],
    }
    return Signer(key=key, header=header)


# ---------------------------------------------------------------- tokens


def parse_scope(scope: str) -> dict[str, Any] | None:
    """`type:name:a,b` -> an access entry; the name may itself contain colons."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not (sep and sep2 and kind and name):
        return None
    wanted = [a for a in actions.split(",") if a]
    return {"type": kind, "name": name, "actions": wanted}


def parse_scopes(scopes: list[str]) -> list[dict[str, Any]]:
    """Parse every scope (each may hold several, space separated); merge duplicates."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for chunk in scopes:
        for scope in chunk.split():
            entry = parse_scope(scope)
            if entry is None:
                raise RequestError("invalid_scope", f"malformed scope {scope!r}")
            slot = merged.setdefault((entry["type"], entry["name"]), {**entry, "actions": []})
            for action in entry["actions"]:
                if action not in slot["actions"]:
                    slot["actions"].append(action)
    return list(merged.values())


def sign_jwt(signer: Signer, claims: dict[str, Any]) -> str:
    """Compact-serialize and RS256-sign claims."""
    header = b64url(json.dumps(signer.header, separators=(",", ":")).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = signer.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{b64url(signature)}"


def rfc3339(ts: int) -> str:
    """Seconds since the epoch as an RFC 3339 UTC timestamp."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def issue_token(cfg: Config, signer: Signer, subject: str, access: list[dict[str, Any]]) -> dict[str, Any]:
    """The token response body for a subject granted access."""
    now = int(time.time())
    claims = {
        "iss": cfg.issuer,
        "sub": subject,
        "aud": cfg.service,
        "exp": now + cfg.ttl,
        "nbf": now,
        "iat": now,
        "jti": secrets.token_hex(16),
        "access": access,
    }
    token = sign_jwt(signer, claims)
    return {"token": token, "access_token": token, "expires_in": cfg.ttl, "issued_at": rfc3339(now)}


# ---------------------------------------------------------------- requests


def check_credentials(cfg: Config, username: str | None, password: str | None) -> str:
    """Return the user name if the credentials match, else raise AuthError."""
    if username is None or password is None:
        raise AuthError("credentials required")
    user_ok = hmac.compare_digest(username.encode(), cfg.username.encode())
    pass_ok = hmac.compare_digest(password.encode(), cfg.password.encode())
    if not (user_ok and pass_ok):
        raise AuthError("invalid username or password")
    return username


def basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    """Decode an `Authorization: Basic` header; (None, None) when absent or unusable."""
    if not header:
        return None, None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


def check_service(cfg: Config, service: str | None) -> None:
    """Refuse tokens for a service other than ours (they would never verify)."""
    if service and service != cfg.service:
        raise RequestError("invalid_request", f"unknown service {service!r}")


def handle_get(cfg: Config, signer: Signer, query: dict[str, list[str]], auth: str | None) -> dict[str, Any]:
    """GET /token: basic-auth client, scopes in the query string."""
    subject = check_credentials(cfg, *basic_credentials(auth))
    check_service(cfg, (query.get("service") or [None])[0])
    return issue_token(cfg, signer, subject, parse_scopes(query.get("scope", [])))


def handle_post(cfg: Config, signer: Signer, form: dict[str, list[str]], auth: str | None) -> dict[str, Any]:
    """POST /token: OAuth2 password grant (basic auth also accepted for the user)."""
    grant = (form.get("grant_type") or [""])[0]
    if grant != "password":
        raise RequestError("unsupported_grant_type", f"unsupported grant_type {grant!r}")
    username = (form.get("username") or [None])[0]
    password = (form.get("password") or [None])[0]
    if username is None:
        username, password = basic_credentials(auth)
    subject = check_credentials(cfg, username, password)
    check_service(cfg, (form.get("service") or [None])[0])
    scopes = form.get("scope", [])
    body = issue_token(cfg, signer, subject, parse_scopes(scopes))
    body["scope"] = " ".join(" ".join(scopes).split())
    return body


class TokenHandler(BaseHTTPRequestHandler):
    """HTTP front end; the configuration and signer are set on the server."""

    server_version = "pycri-token-server/1"
    protocol_version = "HTTP/1.1"

    @property
    def cfg(self) -> Config:
        return self.server.cfg  # type: ignore[attr-defined]

    @property
    def signer(self) -> Signer:
        return self.server.signer  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
        LOG.info("%s %s", self.address_string(), format % args)

    def send_json(self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def respond(self, produce: Any) -> None:
        """Run produce() and map its outcome to an HTTP response."""
        try:
            self.send_json(200, produce())
        except AuthError as err:
            self.send_json(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": str(err)}], "error": "invalid_grant"},
                {"WWW-Authenticate": 'Basic realm="pycri-test-token"'},
            )
        except RequestError as err:
            self.send_json(400, {"error": err.code, "error_description": str(err)})

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self.send_json(200, {"status": "ok"})
        elif url.path == "/token":
            query = parse_qs(url.query, keep_blank_values=False)
            self.respond(lambda: handle_get(self.cfg, self.signer, query, self.headers.get("Authorization")))
        else:
            self.send_json(404, {"error": "not_found"})

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            self.send_json(413, {"error": "request_too_large"})
            self.close_connection = True
            return
        raw = self.rfile.read(length).decode("utf-8", "replace")
        if url.path != "/token":
            self.send_json(404, {"error": "not_found"})
            return
        form = parse_qs(raw, keep_blank_values=False)
        self.respond(lambda: handle_post(self.cfg, self.signer, form, self.headers.get("Authorization")))


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/pycri-test/registry/token"))
    parser.add_argument("--listen", default="127.0.0.1:5003", help="HOST:PORT")
    parser.add_argument("--service", default="pycri-test-registry")
    parser.add_argument("--issuer", default="pycri-test-issuer")
    parser.add_argument("--username", default="pycri-token")
    parser.add_argument("--password", default="token-secret")
    parser.add_argument("--ttl", type=int, default=300, help="token lifetime, seconds")
    parser.add_argument("--init", action="store_true", help="create key and certificate, then exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    if args.init:
        for path in ensure_key_material(args.state_dir):
            print(path)
        return 0
    host, _, port = args.listen.rpartition(":")
    cfg = Config(args.service, args.issuer, args.username, args.password, args.ttl)
    server = ThreadingHTTPServer((host, int(port)), TokenHandler)
    server.daemon_threads = True
    server.cfg = cfg  # type: ignore[attr-defined]
    server.signer = load_signer(args.state_dir)  # type: ignore[attr-defined]
    LOG.info("token server for %s (issuer %s) on http://%s/token", cfg.service, cfg.issuer, args.listen)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
