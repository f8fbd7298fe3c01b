"""`pycri images import` and the kind node's ctr/containerd front ends against a real daemon,
with real archives: an image docker builds (FROM scratch and the host's static busybox) and
saves, and an OCI layout made from an image pycri pulled. The images show in crictl and run."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import REPO, VENV_BIN, Pycri, container_config, pod_config

pytestmark = pytest.mark.e2e

TAGS = ("pycri-e2e/imported:1", "example.com/pycri-e2e/imported:2")
GREETING = "hello from an imported image"
CTR = REPO / "hack/kind/ctr"
CONTAINERD = REPO / "hack/kind/containerd"


@pytest.fixture(scope="module")
def docker_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny image docker builds here, with nothing from the internet; its docker id."""
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        started = subprocess.run([str(REPO / "hack/docker.sh")], capture_output=True, text=True)
        if started.returncode != 0 or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
            pytest.skip(f"dockerd is not running and hack/docker.sh could not start it: {started.stderr[-500:]}")
    busybox = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)), None)
    if busybox is None or b"statically linked" not in subprocess.run(["file", "-L", busybox],
                                                                   capture_output=True).stdout:
        pytest.skip("no static busybox on this host (busybox-static)")
    context = tmp_path_factory.mktemp("docker-context")
    shutil.copy(busybox, context / "busybox")
    (context / "Dockerfile").write_text(
        f'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "echo", "{GREETING}"]\n')
    tags = [arg for tag in TAGS for arg in ("-t", tag)]
    subprocess.run(["docker", "build", "-q", *tags, str(context)], check=True, capture_output=True)
    yield docker_id(TAGS[0])
    subprocess.run(["docker", "rmi", *TAGS], capture_output=True)


def docker_id(image: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "-f", "{{ .Id }}", image],
                          check=True, capture_output=True, text=True).stdout.strip()


def docker_save(path: Path, *images: str) -> Path:
    subprocess.run(["docker", "save", "-o", str(path), *images], check=True, capture_output=True)
    return path


def pycri_images(pycri: Pycri, *args: str, stdin: Any = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "pycri"), "--config", str(pycri.config), "images", *args],
                          capture_output=True, text=True, stdin=stdin, timeout=300)


def front_end(pycri: Pycri, tool: Path, *args: str, stdin: Any = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYCRI_CLI=str(VENV_BIN / "pycri"), PYCRI_CONFIG=str(pycri.config))
    return subprocess.run([str(tool), *args], capture_output=True, text=True, stdin=stdin, env=env, timeout=300)


def repo_tags(pycri: Pycri) -> dict[str, list[str]]:
    return {i["id"]: i["repoTags"] for i in pycri.crictl_json("images")["images"]}


def run_image(pycri: Pycri, image: str, name: str) -> str:
    """Run a container of `image` with its own CMD; its output once it has exited."""
    pod_id = pycri.crictl("runp", str(pod_config(pycri.base, name))).stdout.strip()
    ctr = container_config(pycri.base, name, [], image=image)
    container_id = pycri.crictl("create", pod_id, str(ctr), str(pycri.base / f"pod-{name}.json")).stdout.strip()
    pycri.crictl("start", container_id)
    deadline = time.monotonic() + 60
    while pycri.crictl_json("inspect", container_id)["status"]["state"] != "CONTAINER_EXITED":
        assert time.monotonic() < deadline, "the container did not exit in 60 s"
        time.sleep(0.2)
    return pycri.crictl("logs", container_id).stdout


def test_docker_save_imported_shows_in_crictl_and_runs(pycri: Pycri, docker_image: str, tmp_path: Path) -> None:
    archive = docker_save(tmp_path / "image.tar", *TAGS)
    result = pycri_images(pycri, "import", str(archive))
    assert result.returncode == 0, result.stderr
    assert f"imported {docker_image}" in result.stdout
    tags = repo_tags(pycri)
    assert sorted(tags[docker_image]) == ["docker.io/pycri-e2e/imported:1", "example.com/pycri-e2e/imported:2"]
    # kind load compares `crictl inspecti` with docker's image id, and finds the image by it
    for name in (*TAGS, docker_image):
        assert pycri.crictl_json("inspecti", name)["status"]["id"] == docker_image
    assert GREETING in run_image(pycri, TAGS[1], "imported")


def test_kind_load_through_the_front_ends(pycri: Pycri, docker_image: str) -> None:
    """What kind load runs in a node: containerd config dump, then ctr images import from
    standard input; ctr images tag when the node has the image under another name."""
    dump = front_end(pycri, CONTAINERD, "config", "dump")
    assert dump.returncode == 0
    assert tomllib.loads(dump.stdout)["plugins"]["io.containerd.cri.v1.images"]["snapshotter"] == "overlayfs"
    save = subprocess.Popen(["docker", "save", TAGS[0]], stdout=subprocess.PIPE)
    imported = front_end(pycri, CTR, "--namespace=k8s.io", "images", "import", "--all-platforms", "--digests",
                         "--snapshotter=overlayfs", "-", stdin=save.stdout)
    assert save.wait() == 0
    assert imported.returncode == 0, imported.stderr
    assert repo_tags(pycri)[docker_image] == ["docker.io/pycri-e2e/imported:1"]
    retag = front_end(pycri, CTR, "--namespace=k8s.io", "images", "tag", "--force", docker_image,
                      "docker.io/library/retagged:latest")
    assert retag.returncode == 0, retag.stderr
    assert pycri.crictl_json("inspecti", "retagged")["status"]["id"] == docker_image
    assert GREETING in run_image(pycri, "retagged", "retagged")


@pytest.mark.parametrize("tool,args", [
    (CTR, ["--namespace=k8s.io", "images", "pull", "docker.io/library/busybox:latest"]),
    (CTR, ["images", "import", "-"]),  # the default namespace
    (CTR, ["--namespace=k8s.io", "images", "import", "--snapshotter=native", "-"]),
    (CTR, ["--namespace=k8s.io", "containers", "list"]),
    (CONTAINERD, []),
    (CONTAINERD, ["config", "default"]),
])
def test_front_ends_refuse_the_rest(pycri: Pycri, tool: Path, args: list[str]) -> None:
    result = front_end(pycri, tool, *args, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert "runs pycri, not containerd" in result.stderr


def test_oci_layout_from_a_pulled_image_shares_its_layers(pycri: Pycri, tmp_path: Path) -> None:
    pycri.crictl("pull", "busybox")
    pulled = pycri.crictl_json("inspecti", "busybox")
    with contextlib.closing(sqlite3.connect(f"file:{pycri.root / 'pycri.db'}?mode=ro", uri=True)) as db:
        [manifest_digest] = db.execute("SELECT manifest_digest FROM images WHERE id=?",
                                       (pulled["status"]["id"],)).fetchone()
    blobs = pycri.root / "images/content/blobs/sha256"
    layers_before = pycri.layer_dirs()
    archive = tmp_path / "oci.tar"
    oci_layout(archive, blobs, manifest_digest, "example.com/pycri-e2e/copied:1")
    result = pycri_images(pycri, "import", "-", stdin=archive.open("rb"))
    assert result.returncode == 0, result.stderr
    copied = pycri.crictl_json("inspecti", "example.com/pycri-e2e/copied:1")["status"]
    assert copied["id"] == pulled["status"]["id"]  # the same config: the same image, one more name
    assert pycri.layer_dirs() == layers_before  # nothing unpacked twice
    assert pycri.leftovers() == []
    pod_id = pycri.crictl("runp", str(pod_config(pycri.base, "copied"))).stdout.strip()
    ctr = container_config(pycri.base, "copied", ["echo", "from the copy"], image="example.com/pycri-e2e/copied:1")
    container_id = pycri.crictl("create", pod_id, str(ctr), str(pycri.base / "pod-copied.json")).stdout.strip()
    pycri.crictl("start", container_id)
    deadline = time.monotonic() + 60
    while "from the copy" not in pycri.crictl("logs", container_id).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_oci_layout_of_a_docker_image_runs(pycri: Pycri, docker_image: str, tmp_path: Path) -> None:
    """An OCI layout (gzip'd layers) made from docker's save, with its name in an annotation."""
    saved = docker_save(tmp_path / "docker.tar", TAGS[0])
    archive = tmp_path / "oci.tar"
    with tarfile.open(saved) as source, tarfile.open(archive, "w") as out:
        [entry] = json.load(source.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = source.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        layers = [gzip.compress(source.extractfile(name).read(), mtime=0) for name in entry["Layers"]]  # type: ignore[union-attr]
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **add_blob(out, config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **add_blob(out, la)}
                               for la in layers]}
        desc = add_blob(out, json.dumps(manifest).encode())
        finish_layout(out, desc, "example.com/pycri-e2e/oci:1")
    result = pycri_images(pycri, "import", str(archive))
    assert result.returncode == 0, result.stderr
    assert pycri.crictl_json("inspecti", "example.com/pycri-e2e/oci:1")["status"]["id"] == docker_image
    assert GREETING in run_image(pycri, "example.com/pycri-e2e/oci:1", "oci")


def test_a_corrupt_archive_is_refused_and_leaves_nothing(pycri: Pycri, docker_image: str, tmp_path: Path) -> None:
    saved = docker_save(tmp_path / "image.tar", TAGS[0])
    corrupt = tmp_path / "corrupt.tar"
    with tarfile.open(saved) as source, tarfile.open(corrupt, "w") as out:
        for member in source:
            data = source.extractfile(member).read() if member.isreg() else None  # type: ignore[union-attr]
            if data is not None and member.name.endswith("layer.tar"):
                data = data[:600] + bytes([data[600] ^ 1]) + data[601:]
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    before = (pycri.blobs(), pycri.layer_dirs(), repo_tags(pycri))
    result = pycri_images(pycri, "import", str(corrupt))
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr
    assert "does not match" in result.stderr or "unpacks to" in result.stderr
    assert (pycri.blobs(), pycri.layer_dirs(), repo_tags(pycri)) == before
    assert pycri.leftovers() == []
    missing = pycri_images(pycri, "import", str(tmp_path / "absent.tar"))
    assert missing.returncode == 1 and "absent.tar" in missing.stderr


# -- making OCI layouts -------------------------------------------------------------------


def add_blob(out: tarfile.TarFile, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    name = f"blobs/sha256/{digest}"
    if name not in out.getnames():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def finish_layout(out: tarfile.TarFile, desc: dict[str, Any], name: str) -> None:
    for member, doc in (("oci-layout", {"imageLayoutVersion": "1.0.0"}),
                        ("index.json", {"schemaVersion": 2, "manifests": [
                            {"mediaType": "application/vnd.oci.image.manifest.v1+json", **desc,
                             "annotations": {"io.containerd.image.name": name,
                                             "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]})):
        data = json.dumps(doc).encode()
        info = tarfile.TarInfo(member)
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))


def oci_layout(path: Path, blobs: Path, manifest_digest: str, name: str) -> None:
    """An OCI layout of an image pycri pulled: its manifest, config and layer blobs as stored."""
    manifest_bytes = (blobs / manifest_digest.split(":")[1]).read_bytes()
    manifest = json.loads(manifest_bytes)
    with tarfile.open(path, "w") as out:
        for desc in (manifest["config"], *manifest["layers"]):
            add_blob(out, (blobs / desc["digest"].split(":")[1]).read_bytes())
        desc = add_blob(out, manifest_bytes)
        finish_layout(out, desc, name)
