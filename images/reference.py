"""Image references, parsed and normalised the way kubelet and the docker tools do.

`busybox` is `docker.io/library/busybox:latest`; `index.docker.io` is `docker.io`;
a reference may carry a tag, a digest or both (the digest wins when pulling).
Grammar after the distribution project's reference package.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pycri.common.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_ID_RE = re.compile(r"^[a-f0-9]{64}$")
MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """domain/path, without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def tagged(self) -> str | None:
        """name:tag (the RepoTags form), or None for a reference by digest only."""
        return f"{self.name}:{self.tag}" if self.tag else None

    def with_digest(self, digest: str) -> str:
        """name@digest (the RepoDigests form)."""
        return f"{self.name}@{digest}"

    @property
    def pull_target(self) -> str:
        """What to ask the registry for: the digest if there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def validate_digest(digest: str) -> str:
    if not _DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}")
    if digest.startswith("sha256:") and not _SHA256_RE.match(digest):
        raise InvalidArgument(f"invalid sha256 digest {digest!r}")
    return digest


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise `text`; raise InvalidArgument if it is not a valid reference.

    With default_tag, a reference with neither tag nor digest gets the tag `latest`.
    """
    if not text:
        raise InvalidArgument("image reference is empty")
    if _ID_RE.match(text):
        raise InvalidArgument(
            f"invalid reference {text!r}: cannot specify 64-byte hexadecimal strings"
        )
    remainder, digest = text, None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        validate_digest(digest)
    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidArgument(f"invalid reference {text!r}: bad tag {tag!r}")
    domain, path = _split_domain(remainder)
    if not _DOMAIN_RE.match(domain):
        raise InvalidArgument(f"invalid reference {text!r}: bad registry host {domain!r}")
    if path != path.lower():
        raise InvalidArgument(
            f"invalid reference {text!r}: repository name must be lowercase"
        )
    if not _PATH_RE.match(path):
        raise InvalidArgument(f"invalid reference {text!r}: bad repository name {path!r}")
    if len(domain) + 1 + len(path) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"invalid reference {text!r}: repository name too long")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path


def is_image_id(text: str) -> bool:
    """True for `sha256:<64 hex>` or a bare 64-hex id."""
    return bool(_SHA256_RE.match(text) or _ID_RE.match(text))
