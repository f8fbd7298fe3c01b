"""The image half of the CRI, driven by the real crictl against a real pycri and real registries."""
from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from tests.e2e.conftest import Registries
from tests.e2e.harness import LoopbackServer, Pycri, QuietHandler


def image_status(pycri: Pycri, name: str) -> dict:
    return pycri.crictl_json("inspecti", name)


def test_version_and_info(pycri: Pycri) -> None:
    out = pycri.crictl("version").stdout
    assert "RuntimeName:  pycri" in out and "RuntimeApiVersion:  v1" in out
    info = pycri.crictl_json("info")
    conditions = {c["type"]: c for c in info["status"]["conditions"]}
    assert set(conditions) >= {"RuntimeReady", "NetworkReady"}
    for condition in conditions.values():
        assert condition["status"] or condition["reason"], condition


def test_pull_short_name_normalised(pycri: Pycri) -> None:
    pycri.crictl("pull", "busybox")
    status = image_status(pycri, "busybox")["status"]
    assert status["repoTags"] == ["docker.io/library/busybox:latest"]
    assert status["repoDigests"][0].startswith("docker.io/library/busybox@sha256:")
    assert int(status["size"]) > 500_000
    listed = pycri.crictl_json("images")["images"]
    assert [i["repoTags"] for i in listed] == [["docker.io/library/busybox:latest"]]
    # the same image by its id and by its full name
    assert image_status(pycri, status["id"])["status"]["id"] == status["id"]
    assert image_status(pycri, "docker.io/library/busybox:latest")["status"]["id"] == status["id"]


def test_pull_through_mirror_and_by_digest(pycri: Pycri) -> None:
    pycri.crictl("pull", "registry.k8s.io/e2e-test-images/busybox:1.29-2")
    status = image_status(pycri, "registry.k8s.io/e2e-test-images/busybox:1.29-2")["status"]
    digest = status["repoDigests"][0].split("@")[1]
    pycri.crictl("rmi", status["id"])
    assert pycri.crictl_json("images")["images"] == []

    pycri.crictl("pull", f"registry.k8s.io/e2e-test-images/busybox@{digest}")
    by_digest = image_status(pycri, f"registry.k8s.io/e2e-test-images/busybox@{digest}")["status"]
    assert by_digest["id"] == status["id"]
    assert by_digest["repoTags"] == []
    assert by_digest["repoDigests"] == [f"registry.k8s.io/e2e-test-images/busybox@{digest}"]


def test_one_image_many_names_shares_layers(pycri: Pycri) -> None:
    pycri.crictl("pull", "busybox:latest")
    pycri.crictl("pull", "busybox:1.36")
    pycri.crictl("pull", "pycri/user-uid")  # same layer, other config
    images = pycri.crictl_json("images")["images"]
    busybox = [i for i in images if "docker.io/library/busybox:latest" in i["repoTags"]][0]
    assert sorted(busybox["repoTags"]) == ["docker.io/library/busybox:1.36", "docker.io/library/busybox:latest"]
    assert len(images) == 2
    assert len(pycri.layer_dirs()) == 1  # one layer directory serves both images


def unpacked_layers(pycri: Pycri, name: str) -> list[Path]:
    layers = image_status(pycri, name)["info"]["layers"]  # crictl unpacks the verbose info's JSON
    return [pycri.root / "images/layers" / d.removeprefix("sha256:") / "diff" for d in layers]


def test_zstd_layers(pycri: Pycri) -> None:
    pycri.crictl("pull", "pycri/zstd")
    layers = unpacked_layers(pycri, "pycri/zstd")
    assert (layers[0] / "bin/busybox").stat().st_size > 500_000
    assert (layers[1] / "etc/compression").read_text() == "zstd\n"


@pytest.mark.parametrize("name", ["pycri/multiarch", "pycri/multiarch-docker"])
def test_index_resolves_to_linux_amd64(pycri: Pycri, name: str) -> None:
    pycri.crictl("pull", name)
    layers = unpacked_layers(pycri, name)
    assert (layers[-1] / "etc/arch").read_text() == "amd64\n"
    status = image_status(pycri, name)["status"]
    # the repo digest is the index's; the image id is the amd64 config's
    index_digest = subprocess.run(
        ["curl", "-fsSI", "-H", "Accept: application/vnd.oci.image.index.v1+json, "
         "application/vnd.docker.distribution.manifest.list.v2+json",
         f"http://127.0.0.1:5000/v2/docker.io/{name}/manifests/latest"],
        capture_output=True, text=True, check=True).stdout
    assert status["repoDigests"][0].split("@")[1] in index_digest


def test_whiteouts_become_overlay_whiteouts(pycri: Pycri) -> None:
    pycri.crictl("pull", "pycri/whiteouts")
    top = unpacked_layers(pycri, "pycri/whiteouts")[-1]
    gone = os.lstat(top / "data/gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(top / "data/opaque", "trusted.overlay.opaque") == b"y"
    assert (top / "data/opaque/new").read_text() == "new\n"


@pytest.mark.parametrize("name,uid,username", [
    ("pycri/user-uid", "1002", ""), ("pycri/user-name", None, "www-data"), ("pycri/user-uid-group", "1003", ""),
    ("busybox", None, ""),
])
def test_image_user(pycri: Pycri, name: str, uid: str | None, username: str) -> None:
    pycri.crictl("pull", name)
    status = image_status(pycri, name)["status"]
    assert (status.get("uid") or {}).get("value") == uid
    assert status.get("username", "") == username


def test_rmi_removes_everything(pycri: Pycri) -> None:
    pycri.crictl("pull", "pycri/whiteouts")
    assert pycri.blobs() and pycri.layer_dirs()
    pycri.crictl("rmi", "pycri/whiteouts")
    assert pycri.crictl_json("images")["images"] == []
    assert pycri.blobs() == set() and pycri.layer_dirs() == set()
    assert image_status_absent(pycri, "pycri/whiteouts")


def image_status_absent(pycri: Pycri, name: str) -> bool:
    result = pycri.crictl("inspecti", name, check=False)
    return result.returncode != 0 and "no such image" in (result.stderr + result.stdout).lower()


def test_rmi_keeps_shared_layers(pycri: Pycri) -> None:
    pycri.crictl("pull", "busybox")
    pycri.crictl("pull", "pycri/whiteouts")
    pycri.crictl("rmi", "pycri/whiteouts")
    assert len(pycri.layer_dirs()) == 1
    assert image_status(pycri, "busybox")["status"]["repoTags"] == ["docker.io/library/busybox:latest"]


def test_imagefsinfo(pycri: Pycri) -> None:
    before = pycri.crictl_json("imagefsinfo")["status"]["imageFilesystems"][0]
    pycri.crictl("pull", "busybox")
    after = pycri.crictl_json("imagefsinfo")["status"]["imageFilesystems"][0]
    assert after["fsId"]["mountpoint"] == str(pycri.root / "images/layers")
    assert int(after["usedBytes"]["value"]) > int(before["usedBytes"]["value"]) + 500_000
    assert int(after["inodesUsed"]["value"]) > 250  # busybox and its applet links


def test_pull_with_basic_auth(pycri: Pycri, registries: Registries) -> None:
    name = f"{registries.basic}/docker.io/library/busybox:latest"
    denied = pycri.crictl("pull", name, check=False)
    assert denied.returncode != 0 and "PermissionDenied" in denied.stderr
    wrong = pycri.crictl("pull", "--creds", "pycri-basic:wrong", name, check=False)
    assert wrong.returncode != 0 and "PermissionDenied" in wrong.stderr
    pycri.crictl("pull", "--creds", registries.basic_creds, name)
    assert image_status(pycri, name)["status"]["repoTags"] == [name]
    # the same credentials as a base64 auth string
    pycri.crictl("rmi", name)
    pycri.crictl("pull", "--auth", base64.b64encode(registries.basic_creds.encode()).decode(), name)


def test_pull_with_token_auth(pycri: Pycri, registries: Registries) -> None:
    name = f"{registries.token}/docker.io/pycri/user-name:latest"
    denied = pycri.crictl("pull", "--creds", "pycri-token:wrong", name, check=False)
    assert denied.returncode != 0 and "PermissionDenied" in denied.stderr
    pycri.crictl("pull", "--creds", registries.token_creds, name)
    assert image_status(pycri, name)["status"]["username"] == "www-data"


def test_errors(pycri: Pycri) -> None:
    missing = pycri.crictl("pull", "pycri/does-not-exist:1.0", check=False)
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr and "docker.io/pycri/does-not-exist:1.0" in missing.stderr
    unreachable = pycri.crictl("pull", "127.0.0.1:5999/some/image", check=False)
    assert "Unavailable" in unreachable.stderr and "127.0.0.1:5999" in unreachable.stderr
    bad = pycri.crictl("pull", "UPPER/Case::bad", check=False)
    assert "InvalidArgument" in bad.stderr
    assert pycri.crictl_json("images")["images"] == []
    assert pycri.blobs() == set() and pycri.leftovers() == []


@pytest.mark.parametrize("name,message", [
    ("pycri/evil-dotdot", "contains '..'"),
    ("pycri/evil-symlink", "symlink"),
    ("pycri/evil-hardlink", "'..'"),
])
def test_hostile_layers_are_refused(pycri: Pycri, name: str, message: str) -> None:
    result = pycri.crictl("pull", name, check=False)
    assert result.returncode != 0 and "DataLoss" in result.stderr and message in result.stderr
    assert not list(Path("/tmp").glob("pycri-evil*")) and not Path("/pycri-evil-dotdot").exists()
    assert pycri.crictl_json("images")["images"] == []
    assert pycri.blobs() == set() and pycri.layer_dirs() == set() and pycri.leftovers() == []


def test_digest_mismatch_is_refused(pycri: Pycri, registries: Registries) -> None:
    pycri.crictl("pull", "pycri/corrupt")
    info = image_status(pycri, "pycri/corrupt")
    manifest_layers = _manifest_layers(registries, "docker.io/pycri/corrupt")
    pycri.crictl("rmi", "pycri/corrupt")
    data = registries.blob_data("docker.io/pycri/corrupt", manifest_layers[0])
    original = data.read_bytes()
    try:
        data.write_bytes(bytes(b ^ 0xFF for b in original))  # same size, other bytes
        result = pycri.crictl("pull", "pycri/corrupt", check=False)
    finally:
        data.write_bytes(original)
    assert result.returncode != 0 and "DataLoss" in result.stderr and manifest_layers[0] in result.stderr
    assert pycri.crictl_json("images")["images"] == []
    assert pycri.blobs() == set() and pycri.layer_dirs() == set() and pycri.leftovers() == []
    pycri.crictl("pull", "pycri/corrupt")  # and with the right bytes back, it pulls
    assert image_status(pycri, "pycri/corrupt")["status"]["id"] == info["status"]["id"]


def _manifest_layers(registries: Registries, repository: str) -> list[str]:
    import json
    out = subprocess.run(
        ["curl", "-fsS", "-H", "Accept: application/vnd.docker.distribution.manifest.v2+json",
         f"http://{registries.plain}/v2/{repository}/manifests/latest"],
        capture_output=True, text=True, check=True).stdout
    return [layer["digest"] for layer in json.loads(out)["layers"]]


def _blob_gets(registries: Registries, digest: str) -> int:
    log = (registries.logs / "plain.log").read_text(errors="replace")
    # the registry's access log: 127.0.0.1 - - [date] "GET /v2/<repo>/blobs/<digest> HTTP/1.1" 200 ...
    return sum(1 for line in log.splitlines() if f'"GET /v2/docker.io/pycri/big/blobs/{digest} HTTP/1.1" 200' in line)


def test_concurrent_pulls_download_once(pycri: Pycri, registries: Registries) -> None:
    big_layer = _manifest_layers(registries, "docker.io/pycri/big")[-1]
    before = _blob_gets(registries, big_layer)
    results: list[subprocess.CompletedProcess[str]] = []
    threads = [threading.Thread(target=lambda: results.append(pycri.crictl("pull", "pycri/big", check=False)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    deadline = time.monotonic() + 60  # the registry writes its access log line after the response
    while _blob_gets(registries, big_layer) == before:
        assert time.monotonic() < deadline, "the registry logged no download"
        time.sleep(0.1)
    assert _blob_gets(registries, big_layer) - before == 1


class HeldMirror(LoopbackServer):
    """A mirror in front of the plain registry that, until released, serves blobs over `hold`
    bytes only in part and then holds the connection: a pull of such a blob is under way for as
    long as the test wants, however fast the machine."""

    def __init__(self, upstream: str = "127.0.0.1:5000", hold: int = 32 * 1024 * 1024, trickle: bool = False) -> None:
        import http.client

        self.release = threading.Event()
        mirror = self

        class Handler(QuietHandler):
            def do_HEAD(self) -> None:
                self.forward(body=False)

            def do_GET(self) -> None:
                self.forward(body=True)

            def forward(self, body: bool) -> None:
                conn = http.client.HTTPConnection(upstream, timeout=60)
                conn.request(self.command, self.path, headers={k: v for k, v in self.headers.items()
                                                               if k.lower() in ("accept", "range")})
                response = conn.getresponse()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.end_headers()
                length = int(response.getheader("Content-Length") or 0)
                if body:
                    held = "/blobs/" in self.path and length > hold and not mirror.release.is_set()
                    if not held:
                        shutil.copyfileobj(response, self.wfile, 1 << 20)
                    else:
                        self.wfile.write(response.read(hold // 2))
                        self.wfile.flush()
                        # trickle: a byte every half second, so the client's read timeout never fires
                        while not mirror.release.wait(0.5 if trickle else 300) and trickle:
                            try:
                                self.wfile.write(response.read(1))
                                self.wfile.flush()
                            except OSError:  # the puller hung up
                                break
                        self.close_connection = True
                conn.close()

        super().__init__(Handler)
        self.start()

    def close(self) -> None:
        self.release.set()
        super().close()


def behind(mirror: HeldMirror, base: Path) -> Pycri:
    """A pycri whose docker.io mirror is `mirror`."""
    pycri = Pycri(base)
    config = pycri.config.read_text()
    pycri.config.write_text(config.replace('"http://127.0.0.1:5000/docker.io"', f'"http://{mirror.address}/docker.io"')
                            .replace('plain_http = [', f'plain_http = ["{mirror.address}", '))
    pycri.start()
    return pycri


def pull_under_way(pycri: Pycri) -> subprocess.Popen[str]:
    """`crictl pull pycri/big`, once its download is under way (written to the ingest)."""
    puller = subprocess.Popen(["crictl", "--config", str(pycri.crictl_config), "pull", "pycri/big"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not pycri.leftovers():
        assert time.monotonic() < deadline, "the pull never started writing"
        time.sleep(0.01)
    return puller


def test_a_pull_the_client_gave_up_on_stops(tmp_path: Path, registries: Registries) -> None:
    """The client's deadline passes while the big layer trickles in: the pull stops and cleans
    up at once (it held the image's pull lock, so the client's retry queued behind it)."""
    from pycri.api.cri import api_pb2 as cri
    from pycri.api.cri import api_pb2_grpc

    mirror = HeldMirror(trickle=True)
    pycri = behind(mirror, tmp_path)
    try:
        stub = api_pb2_grpc.ImageServiceStub(grpc.insecure_channel(f"unix://{pycri.socket}"))
        with pytest.raises(grpc.RpcError) as gave_up:
            stub.PullImage(cri.PullImageRequest(image=cri.ImageSpec(image="pycri/big")), timeout=5)
        assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = time.monotonic() + 120
        while pycri.leftovers() or "cancelled by the client" not in pycri.log.read_text():
            assert time.monotonic() < deadline, f"the pull went on: {pycri.leftovers()}"
            time.sleep(0.1)
        assert image_status_absent(pycri, "pycri/big") and pycri.blobs() == set() and pycri.layer_dirs() == set()
    finally:
        mirror.close()
        pycri.remove_everything()
        pycri.stop()
        pycri.unmount_pin_root()


def test_sigkill_during_pull_then_restart(tmp_path: Path, registries: Registries) -> None:
    mirror = HeldMirror()
    pycri = behind(mirror, tmp_path)
    try:
        puller = pull_under_way(pycri)  # held half-way by the mirror
        pycri.kill()
        puller.communicate(timeout=60)
        assert puller.returncode != 0
        mirror.release.set()  # from now on it serves every blob whole
        pycri.start()
        _after_a_killed_pull(pycri)
    finally:
        mirror.close()
        if pycri.process is not None and pycri.process.poll() is None:
            pycri.remove_everything()
        pycri.stop()
        pycri.unmount_pin_root()


def _after_a_killed_pull(pycri: Pycri) -> None:
    # consistent: the image is absent, nothing partial is left, nothing is unreferenced
    assert image_status_absent(pycri, "pycri/big")
    assert pycri.leftovers() == [] and pycri.blobs() == set() and pycri.layer_dirs() == set()
    pycri.crictl("pull", "pycri/big")
    status = image_status(pycri, "pycri/big")["status"]
    assert int(status["size"]) > 100 * 1024 * 1024
    assert (unpacked_layers(pycri, "pycri/big")[-1] / "data/blob").stat().st_size == 100 * 1024 * 1024


def test_sigterm_during_a_pull_stops_cleanly(tmp_path: Path, registries: Registries) -> None:
    """Stopping pycri (systemctl restart in a kind node) while a pull runs: gRPC cancels the
    call, but its handler thread ran on and met a closed database (ProgrammingError). Stop now
    waits for the cancelled handlers, so the pull ends as cancelled, pycri exits 0, and the
    next start finds nothing half-made."""
    mirror = HeldMirror(trickle=True)
    pycri = behind(mirror, tmp_path)
    try:
        puller = pull_under_way(pycri)  # trickling
        pycri.stop()
        assert pycri.process is not None and pycri.process.returncode == 0
        puller.communicate(timeout=60)
        log = pycri.log.read_text()
        assert "closed database" not in log and "ProgrammingError" not in log, log[-4000:]
        assert "cancelled" in log
        mirror.release.set()
        pycri.start()
        assert image_status_absent(pycri, "pycri/big") and pycri.leftovers() == []
    finally:
        mirror.close()
        if pycri.process is not None and pycri.process.poll() is None:
            pycri.remove_everything()
        pycri.stop()
        pycri.unmount_pin_root()
