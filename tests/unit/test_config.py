"""The config file: defaults, every key, strictness, the printed form, endpoints."""
from __future__ import annotations

from pathlib import Path

import pytest

from pycri.common.errors import InvalidArgument
from pycri.criserver.config import Config, from_dict, load, to_toml
from pycri.images.config import RegistryConfig, parse_endpoint
from pycri.images.registry import Credentials


def test_defaults_without_file(tmp_path: Path) -> None:
    config = from_dict({})
    assert config == Config()
    assert config.socket_path == Path("/run/pycri/pycri.sock")


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pycri.toml"
    path.write_text(Path(__file__).resolve().parents[2].joinpath("hack/pycri.toml").read_text())
    config = load(path)
    assert config.registry.mirrors["docker.io"] == ["http://127.0.0.1:5000/docker.io"]
    printed = tmp_path / "printed.toml"
    printed.write_text(to_toml(config))
    assert load(printed) == config


@pytest.mark.parametrize("doc,message", [
    ({"lisen": "x"}, "unknown key"),
    ({"listen": "tcp://x"}, "unix://"),
    ({"log": {"level": "loud"}}, "one of"),
    ({"cgroup": {"driver": "none"}}, "one of"),
    ({"registry": {"max_concurrent_downloads": 0}}, "at least 1"),
    ({"registry": {"plain_http": "x"}}, "wrong type"),
    ({"registry": {"mirrors": {"docker.io": ["ftp://x"]}}}, "http"),
    ({"registry": {"auths": {"h": {"user": "x"}}}}, "unknown key"),
])
def test_rejects(doc: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        from_dict(doc)


def test_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("listen = ")
    with pytest.raises(InvalidArgument, match="cannot read config"):
        load(path)


def test_endpoints_mirrors_first_then_upstream() -> None:
    config = RegistryConfig(mirrors={"docker.io": ["http://127.0.0.1:5000/docker.io"]}, plain_http=["reg:80"])
    mirror, upstream = config.endpoints("docker.io")
    assert (mirror.base_url, mirror.prefix, mirror.mirror) == ("http://127.0.0.1:5000", "docker.io", True)
    assert mirror.repository_path("library/busybox") == "docker.io/library/busybox"
    assert upstream.base_url == "https://registry-1.docker.io"
    assert [e.base_url for e in config.endpoints("reg:80")] == ["http://reg:80"]
    assert [e.base_url for e in config.endpoints("localhost:5000")] == ["http://localhost:5000"]
    assert [e.base_url for e in config.endpoints("quay.io")] == ["https://quay.io"]
    only_mirror = RegistryConfig(mirrors={"docker.io": ["http://m"]}, fall_back_to_upstream=False)
    assert [e.base_url for e in only_mirror.endpoints("docker.io")] == ["http://m"]


def test_configured_credentials_only_when_client_sends_none() -> None:
    config = RegistryConfig(auths={"127.0.0.1:5001": Credentials("u", "p")})
    endpoint = parse_endpoint("http://127.0.0.1:5001")
    assert config.credentials_for(endpoint, Credentials(), "127.0.0.1:5001") == Credentials("u", "p")
    assert config.credentials_for(endpoint, Credentials("x", "y"), "127.0.0.1:5001") == Credentials("x", "y")
    assert parse_endpoint("http://h:1/v2/pre/fix").prefix == "pre/fix"


def test_credentials_go_only_to_the_host_they_were_issued_for() -> None:
    """CVE-2020-15157: a mirror on another host never gets the client's credentials."""
    config = RegistryConfig(mirrors={"docker.io": ["http://mirror:5000"], "reg:5001": ["http://mirror:5000"]},
                            auths={"mirror:5000": Credentials("m", "mp")})
    mirror, hub = config.endpoints("docker.io")
    given = Credentials("u", "p")
    assert config.credentials_for(mirror, given, "docker.io") == Credentials("m", "mp")  # the mirror's own
    assert config.credentials_for(hub, given, "docker.io") == given
    hub_creds = Credentials("u", "p", server_address="https://index.docker.io/v1/")
    assert config.credentials_for(hub, hub_creds, "docker.io") == hub_creds
    assert config.credentials_for(mirror, hub_creds, "docker.io") == Credentials("m", "mp")
    mirror2, reg = config.endpoints("reg:5001")
    assert config.credentials_for(reg, given, "reg:5001") == given
    assert config.credentials_for(reg, Credentials("u", "p", server_address="other:5001"), "reg:5001") == Credentials()
    # credentials issued for the mirror's host go to the mirror
    for_mirror = Credentials("u", "p", server_address="mirror:5000")
    assert config.credentials_for(mirror2, for_mirror, "reg:5001") == for_mirror
    assert config.credentials_for(reg, for_mirror, "reg:5001") == Credentials()


def test_same_host_forms() -> None:
    from pycri.images.config import same_host

    assert same_host("https://index.docker.io/v1/", "registry-1.docker.io")
    assert same_host("reg.example:5000/team", "reg.example:5000")
    assert same_host("REG.example", "reg.example")
    assert not same_host("reg.example", "reg.example:5000")
    assert not same_host("", "reg.example")
    assert same_host("*.gcr.io", "eu.gcr.io")
    assert not same_host("*.gcr.io", "evil.eu.gcr.io.attacker.example")
    assert not same_host("*.gcr.io", "gcr.io")
