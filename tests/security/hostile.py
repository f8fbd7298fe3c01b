"""Hostile images and hostile local users, made at test time for tests/security.

Images are built with hack/testimages.py's builder (deterministic, standard library plus
zstandard) and pushed to the plain test registry under `docker.io/pycri-attack/<name>`, which
pycri's mirror serves as `pycri-attack/<name>`. Raw manifests and configs can be pushed as
they are, for attacks on the parsers themselves.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.e2e.harness import REPO

REGISTRY = "127.0.0.1:5000"
PREFIX = "docker.io/pycri-attack/"
ATTACKER = "pycri-attacker"


def _testimages() -> Any:
    if "pycri_testimages" not in sys.modules:
        spec = importlib.util.spec_from_file_location("pycri_testimages", REPO / "hack/testimages.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["pycri_testimages"] = module
        spec.loader.exec_module(module)
    return sys.modules["pycri_testimages"]


ti = _testimages()
Layer, Entry = ti.Layer, ti.Entry
d, f, symlink, host_file = ti.d, ti.f, ti.symlink, ti.host_file
BUSYBOX = ti.BUSYBOX_LINKED  # busybox with its applets, /etc/passwd and /etc/group


def layer(name: str, *entries: Any, compression: str = "gzip") -> Any:
    """A layer of the given tar entries (name: the build cache key, unique per content)."""
    items = list(entries)
    return Layer(f"attack-{name}", lambda: items, compression=compression)


def push_image(name: str, *layers: Any, busybox: bool = True, **config: Any) -> str:
    """Build an image of (busybox +) `layers` with image config fields (`user`, `entrypoint`,
    `cmd`, `env`, `labels`, ...) and push it; returns the name to give crictl."""
    spec = ti.ImageSpec(f"attack-{name}", [PREFIX + f"{name}:latest"],
                        [*([BUSYBOX] if busybox else []), *layers], **({"cmd": ["sh"]} | config))
    registry = ti.Registry(REGISTRY)
    with tempfile.TemporaryDirectory(prefix="pycri-attack-") as tmp:
        manifest = ti.Builder(Path(tmp)).build(spec)
        registry.push(PREFIX.rstrip("/") + "/" + name, "latest", manifest)
    return f"pycri-attack/{name}"


def push_raw(name: str, manifest: bytes | dict[str, Any], blobs: Sequence[bytes] = (),
             media_type: str = "application/vnd.oci.image.manifest.v1+json", tag: str = "latest") -> str:
    """Push blobs and a manifest exactly as given (for oversized or malformed documents)."""
    registry = ti.Registry(REGISTRY)
    repo = PREFIX.rstrip("/") + "/" + name
    for data in blobs:
        registry.push_blob(repo, raw_blob(data))
    body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    registry.request("PUT", f"/v2/{repo}/manifests/{tag}", body, {"Content-Type": media_type}, expect=201)
    return f"pycri-attack/{name}:{tag}"


def raw_blob(data: bytes) -> Any:
    return ti.Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), data=data)


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}


# --------------------------------------------------------------------------- local users

def attacker_user() -> pwd.struct_passwd:
    """An unprivileged host user with no groups of note (made once per machine)."""
    try:
        return pwd.getpwnam(ATTACKER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", ATTACKER], check=True)
        return pwd.getpwnam(ATTACKER)


def as_attacker(*command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `command` as the unprivileged user, with no capabilities and no extra groups."""
    user = attacker_user()
    return subprocess.run(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
         "--inh-caps=-all", "--bounding-set=-all", "--", *command],
        capture_output=True, text=True, timeout=timeout, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
