"""The e2e.test images of hack/testimages.py --e2e behave as Kubernetes' e2e specs (v1.37.2) expect
of the real ones, run under a test pycri through crictl. hack/conformance.sh runs the suite with
these images; a spec that fails because an image differs from upstream's is no pycri bug, so each
behaviour a spec relies on is pinned here, with the spec that needs it.

The images are built from what hack/build-e2e.sh leaves in $PYCRI_E2E_BIN: agnhost (from the
kubernetes module), the upstream busybox of hack/images/busybox.sh (from Debian trixie's source
package), files of test/images, and sample-apiserver and etcd (hack/images/sample-apiserver.sh,
hack/images/etcd.sh). Those builds take minutes, so CI does not make them: without them the
tests skip, saying so.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Registries
from tests.e2e.harness import REPO, VENV_BIN, Pycri

E2E_BIN = Path(os.environ.get("PYCRI_E2E_BIN", "/usr/local/lib/pycri/kube/e2e"))
NEEDED = ["busybox", "agnhost", "images/agnhost/porter/localhost.crt",
          "images/agnhost/porter/localhost.key"]
KEYS = ["e2e-busybox", "e2e-nonroot", "e2e-agnhost", "e2e-glibc-dns-testing", "e2e-nginx"]
E2E = "registry.k8s.io/e2e-test-images/"
BUSYBOX, NONROOT, AGNHOST = E2E + "busybox:1.37.0-2", E2E + "nonroot:1.5", E2E + "agnhost:2.66.1"
GLIBC_DNS, NGINX = E2E + "glibc-dns-testing:2.1.1", E2E + "nginx:1.27.0-2"


# the aggregated API server's pod: sample-apiserver and etcd (hack/images/sample-apiserver.sh,
# hack/images/etcd.sh, copied by hack/build-e2e.sh)
# (and busybox, sample-apiserver's base, and the TLS pair the test gives it)
APISERVER_NEEDED = ["busybox", "images/sample-apiserver/sample-apiserver", "images/etcd/etcd",
                    "images/etcd/etcdctl", "images/etcd/etcdutl",
                    "images/agnhost/porter/localhost.crt", "images/agnhost/porter/localhost.key"]
APISERVER_KEYS = ["e2e-sample-apiserver", "e2e-etcd"]
SAMPLE_APISERVER, ETCD = E2E + "sample-apiserver:1.29.2", "registry.k8s.io/etcd:3.7.0-0"


def push_e2e_images(registries: Registries, needed: list[str], keys: list[str]) -> None:
    """The images of ``keys``, pushed to the test registry (a re-push uploads nothing), if the
    files ``needed`` of hack/build-e2e.sh's output are there."""
    missing = [name for name in needed if not (E2E_BIN / name).is_file()]
    if missing:
        pytest.skip(f"the e2e images are built from hack/build-e2e.sh's output, and {E2E_BIN} lacks "
                    f"{', '.join(missing)}: run hack/build-e2e.sh (minutes; not done in CI)")
    push = subprocess.run([str(VENV_BIN / "python"), str(REPO / "hack/testimages.py"), "--registry",
                           registries.plain, "--only", *keys], capture_output=True, text=True)
    if push.returncode != 0:
        pytest.fail(f"hack/testimages.py --only {' '.join(keys)} failed:\n{push.stderr[-3000:]}")


@pytest.fixture(scope="module")
def e2e_images(registries: Registries) -> None:
    """The images of KEYS in the test registry."""
    push_e2e_images(registries, NEEDED, KEYS)


@pytest.fixture(scope="module")
def apiserver_images(registries: Registries) -> None:
    """The images of APISERVER_KEYS in the test registry."""
    push_e2e_images(registries, APISERVER_NEEDED, APISERVER_KEYS)


def run_to_exit(pycri: Pycri, name: str, image: str, command: list[str],
                **extra: Any) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a container of ``image`` in a pod of its own; its logs once it exited."""
    pod = pycri.run_pod(name)
    ctr = pycri.run(pod, name, name, command, image=image, **extra)
    deadline = time.monotonic() + 60
    while pycri.crictl_json("inspect", ctr)["status"]["state"] != "CONTAINER_EXITED":
        assert time.monotonic() < deadline, f"{name} did not exit in 60 s"
        time.sleep(0.1)
    return pycri.crictl("logs", ctr)


@pytest.mark.usefixtures("e2e_images")
def test_busybox_sh_passes_on_environment_names_that_are_no_shell_names(pycri: Pycri) -> None:
    """ConfigMap/Secret "should be consumable via the environment" and "... with several
    prefixes" run `sh -c env` and look for these lines: upstream ash keeps such names (Debian's
    busybox drops them)."""
    names = ["data-1", "p-data-1", "1-data-1", "$_-data-1", "ABC_data-1", "#@!data-1", "SHELL_OK"]
    envs = [{"key": name, "value": "value-1"} for name in names]
    logs = run_to_exit(pycri, "env", BUSYBOX, ["sh", "-c", "env"], envs=envs)
    assert {f"{name}=value-1" for name in names} <= set(logs.stdout.splitlines()), logs.stdout


@pytest.mark.usefixtures("e2e_images")
def test_busybox_applets_in_bin(pycri: Pycri) -> None:
    """Sysctls run /bin/sysctl; ConfigMap binary data runs hexdump -C; every applet is a hard
    link to /bin/busybox, as in Docker's image (so masking one masks that one alone)."""
    script = ("printf AB | hexdump -C; /bin/sysctl kernel.shm_rmid_forced; "
              "for a in sh env hexdump sysctl nslookup wget; do "
              "[ /bin/$a -ef /bin/busybox ] && echo linked $a; done")
    logs = run_to_exit(pycri, "applets", BUSYBOX, ["/bin/sh", "-c", script])
    lines = logs.stdout.splitlines()
    assert lines[0].startswith("00000000  41 42 "), logs.stdout
    assert lines[2].startswith("kernel.shm_rmid_forced = "), logs.stdout
    assert lines[3:] == [f"linked {a}" for a in ("sh", "env", "hexdump", "sysctl", "nslookup", "wget")]


@pytest.mark.usefixtures("e2e_images")
def test_busybox_sh_words_a_read_only_root_as_upstream(pycri: Pycri) -> None:
    """Kubelet "when scheduling a read only busybox container should not write to root
    filesystem" wants exactly this log."""
    logs = run_to_exit(pycri, "ro", BUSYBOX, ["/bin/sh", "-c", "echo test > /file"],
                       linux={"security_context": {"readonly_rootfs": True}})
    assert logs.stdout + logs.stderr == "/bin/sh: can't create /file: Read-only file system\n"


@pytest.mark.usefixtures("e2e_images")
def test_nonroot_runs_as_uid_1234(pycri: Pycri) -> None:
    """Security Context "When creating a container with runAsNonRoot" runs `id -u` in nonroot
    with no user of its own: the image's USER, 1234."""
    assert run_to_exit(pycri, "nonroot", NONROOT, ["id", "-u"]).stdout == "1234\n"
    image = pycri.crictl_json("inspecti", NONROOT)["status"]
    assert image["uid"]["value"] == "1234"


@pytest.mark.usefixtures("e2e_images")
def test_agnhost_serves_https_with_its_pair_and_has_curl(pycri: Pycri) -> None:
    """Lifecycle hooks "should execute poststart/prestop https hook properly" run `netexec` with
    the image's /localhost.crt and /localhost.key; exec hooks run curl; the entrypoint-override
    specs run /agnhost-2; a probe spec runs /bin/bash."""
    pod = pycri.run_pod("agnhost")
    ctr = pycri.run(pod, "agnhost", "agnhost", [
        "/agnhost", "netexec", "--http-port=8443", "--tls-cert-file", "/localhost.crt",
        "--tls-private-key-file", "/localhost.key"], image=AGNHOST)
    # verified against the image's own /localhost.crt (porter's, self-signed, for example.com
    # and 127.0.0.1): the server serves that pair
    curl = ["curl", "-s", "--cacert", "/localhost.crt", "https://127.0.0.1:8443/echo?msg=pycri"]
    deadline = time.monotonic() + 60
    while (got := pycri.crictl("exec", ctr, *curl, check=False)).stdout != "pycri":
        assert time.monotonic() < deadline, f"no answer over https: {got.stdout!r} {got.stderr!r}"
        time.sleep(0.2)
    assert "netexec" in pycri.crictl("exec", ctr, "/agnhost-2", "--help").stdout
    # Probing container "... while pod is in progress of terminating" runs /bin/bash -c
    bash = pycri.crictl("exec", ctr, "/bin/bash", "-c",
                        "trap 'echo trapped' EXIT; echo ${BASH_VERSINFO[0]}")
    assert bash.stdout.splitlines()[1:] == ["trapped"] and bash.stdout[0].isdigit(), bash.stdout
    # the Services specs probe with `nc -v -t -w 2 HOST PORT` (netcat-openbsd's -t), the DNS
    # specs run dig and getent in agnhost as in glibc-dns-testing
    nc = pycri.crictl("exec", ctr, "sh", "-c", "nc -v -t -w 2 127.0.0.1 8443 </dev/null 2>&1", check=False)
    assert "succeeded" in nc.stdout, nc.stdout
    tools = pycri.crictl("exec", ctr, "sh", "-c", "dig -v 2>&1 | head -n 1; getent hosts localhost").stdout
    assert tools.startswith("DiG 9.") and "localhost" in tools.splitlines()[1], tools


@pytest.mark.usefixtures("e2e_images")
def test_agnhost_fake_registry_serves_pause_testing_behind_basic_auth(pycri: Pycri) -> None:
    """Container Runtime blackbox "should be able to pull from private registry with secret"
    runs `agnhost fake-registry-server --private` and pulls localhost:5000/pause:testing with
    user:password: the tag redirects to the index, whose image's manifest and blobs are there
    and match their digests."""
    pod = pycri.run_pod("fakereg")
    ctr = pycri.run(pod, "fakereg", "fakereg",
                    ["/agnhost", "fake-registry-server", "--private", "--port", "15000"], image=AGNHOST)
    base = "http://127.0.0.1:15000/v2/pause"

    def get(path: str, auth: bool = True) -> str:
        curl = ["curl", "-s", "-L", "-w", "\n%{http_code}", *(["-u", "user:password"] if auth else []),
                f"{base}/{path}"]
        return pycri.crictl("exec", ctr, *curl, check=False).stdout

    deadline = time.monotonic() + 60
    while not get("manifests/testing").endswith("\n200"):
        assert time.monotonic() < deadline, f"no answer: {get('manifests/testing')!r}"
        time.sleep(0.2)
    assert get("manifests/testing", auth=False).endswith("\n401")
    index = json.loads(get("manifests/testing").rsplit("\n", 1)[0])
    [entry] = index["manifests"]
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    manifest = json.loads(get(f"manifests/{entry['digest']}").rsplit("\n", 1)[0])
    for blob in [manifest["config"], *manifest["layers"]]:
        sha = pycri.crictl("exec", ctr, "sh", "-c", f"curl -s -u user:password {base}/blobs/{blob['digest']} "
                           "| sha256sum").stdout.split()[0]
        assert "sha256:" + sha == blob["digest"]


@pytest.mark.usefixtures("e2e_images")
def test_glibc_dns_testing_has_dig_and_getent(pycri: Pycri) -> None:
    """The DNS specs run createProbeCommand's loop in glibc-dns-testing: `dig +notcp +noall
    +answer +search NAME A` and `getent hosts NAME`, in sh, with seq and test."""
    script = ("seq 1 2 | tr '\\n' ' '; echo; dig -v 2>&1 | head -n 1; "
              "echo '10.0.0.1 probe.example' >> /etc/hosts; "
              "test -n \"$(getent hosts probe.example)\" && echo OK")
    logs = run_to_exit(pycri, "dns", GLIBC_DNS, ["sh", "-c", script])
    lines = logs.stdout.splitlines()
    assert lines[0] == "1 2 " and lines[1].startswith("DiG 9.") and lines[2:] == ["OK"], logs


@pytest.mark.usefixtures("e2e_images")
def test_nginx_stand_in_serves_on_80(pycri: Pycri) -> None:
    """Specs that run nginx (no command: its CMD) GET / on port 80; the stand-in (busybox httpd
    behind a script that renames itself with ash's `exec -a`) runs on E2E_BUSYBOX's sh."""
    pod = pycri.run_pod("nginx")
    ctr = pycri.run(pod, "nginx", "nginx", [], image=NGINX)
    deadline = time.monotonic() + 60
    while "Welcome to nginx" not in (got := pycri.crictl(
            "exec", ctr, "wget", "-qO-", "http://127.0.0.1/", check=False)).stdout:
        assert time.monotonic() < deadline, f"nginx does not answer: {got.stdout!r} {got.stderr!r}"
        time.sleep(0.2)
    assert "nginx: master process" in pycri.crictl("exec", ctr, "cat", "/proc/1/cmdline").stdout


def wait_for_exec(pycri: Pycri, ctr: str, command: list[str], wanted: str) -> str:
    """Run ``command`` in ``ctr`` until its output contains ``wanted`` (60 s); that output."""
    deadline = time.monotonic() + 60
    while wanted not in (got := pycri.crictl("exec", ctr, *command, check=False)).stdout + got.stderr:
        assert time.monotonic() < deadline, f"{command}: {got.stdout!r} {got.stderr!r}"
        time.sleep(0.5)
    return got.stdout + got.stderr


@pytest.mark.usefixtures("apiserver_images")
def test_etcd_runs_as_the_aggregator_spec_runs_it(pycri: Pycri) -> None:
    """Aggregator "Should be able to support the 1.17 Sample API Server" [Conformance] runs etcd
    with exactly this command (its data in /default.etcd); etcdctl and etcdutl are beside it.
    The image has no libc (distroless static, as upstream's), so that they run shows they are
    static."""
    pod = pycri.run_pod("etcd")
    url = "http://127.0.0.1:2379"
    ctr = pycri.run(pod, "etcd", "etcd", ["/usr/local/bin/etcd", "--listen-client-urls", url,
                                          "--advertise-client-urls", url], image=ETCD)
    health = wait_for_exec(pycri, ctr, ["/usr/local/bin/etcdctl", "endpoint", "health"], "is healthy")
    assert health.startswith("127.0.0.1:2379 is healthy"), health
    put = pycri.crictl("exec", ctr, "/usr/local/bin/etcdctl", "put", "pycri", "e2e").stdout
    assert put == "OK\n"
    assert pycri.crictl("exec", ctr, "/usr/local/bin/etcdctl", "get", "--print-value-only",
                        "pycri").stdout == "e2e\n"
    versions = [pycri.crictl("exec", ctr, *command).stdout.splitlines()[0] for command in (
        ["/usr/local/bin/etcd", "--version"], ["/usr/local/bin/etcdctl", "version"],
        ["/usr/local/bin/etcdutl", "version"])]
    assert versions == ["etcd Version: 3.7.0", "etcdctl version: 3.7.0", "etcdutl version: 3.7.0"]
    image = pycri.crictl_json("inspecti", ETCD)["info"]["imageSpec"]["config"]
    assert image.get("WorkingDir") == "/" and not image.get("Entrypoint") and not image.get("Cmd")


@pytest.mark.usefixtures("apiserver_images")
def test_sample_apiserver_takes_the_spec_args_beside_etcd(pycri: Pycri, tmp_path: Path) -> None:
    """The spec runs sample-apiserver with no command (the image's ENTRYPOINT, /sample-apiserver)
    and these args, its TLS pair from a Secret at /apiserver.local.config/certificates, in
    etcd's pod. Outside a cluster it gets as far as the delegated authentication, which needs
    the in-cluster kube-apiserver: flags, certificate files and the etcd client set up."""
    certs = tmp_path / "certificates"
    certs.mkdir()
    porter = E2E_BIN / "images/agnhost/porter"
    (certs / "tls.crt").write_bytes((porter / "localhost.crt").read_bytes())
    (certs / "tls.key").write_bytes((porter / "localhost.key").read_bytes())
    pod = pycri.run_pod("aggregator")
    url = "http://127.0.0.1:2379"
    etcd = pycri.run(pod, "aggregator", "etcd", ["/usr/local/bin/etcd", "--listen-client-urls", url,
                                                 "--advertise-client-urls", url], image=ETCD)
    wait_for_exec(pycri, etcd, ["/usr/local/bin/etcdctl", "endpoint", "health"], "is healthy")
    args = [f"--etcd-servers={url}", "--tls-cert-file=/apiserver.local.config/certificates/tls.crt",
            "--tls-private-key-file=/apiserver.local.config/certificates/tls.key",
            "--audit-log-path=-", "--audit-log-maxage=0", "--audit-log-maxbackup=0"]
    mounts = [{"container_path": "/apiserver.local.config/certificates", "host_path": str(certs),
               "readonly": True}]
    ctr = pycri.run(pod, "aggregator", "sample-apiserver", [], image=SAMPLE_APISERVER, args=args,
                    mounts=mounts)
    deadline = time.monotonic() + 60
    while pycri.crictl_json("inspect", ctr)["status"]["state"] != "CONTAINER_EXITED":
        assert time.monotonic() < deadline, "sample-apiserver did not exit in 60 s"
        time.sleep(0.2)
    logs = pycri.crictl("logs", ctr)
    assert ("failed to get delegated authentication kubeconfig" in logs.stderr
            and "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined" in logs.stderr), logs
    image = pycri.crictl_json("inspecti", SAMPLE_APISERVER)["info"]["imageSpec"]["config"]
    assert image["Entrypoint"] == ["/sample-apiserver"] and not image.get("Cmd")
    help_text = run_to_exit(pycri, "sample-apiserver-help", SAMPLE_APISERVER, ["/sample-apiserver", "--help"])
    assert "Launch a wardle API server" in help_text.stdout + help_text.stderr
