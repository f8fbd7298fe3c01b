"""Where the registry client may send credentials: the token realm rules."""
from __future__ import annotations

from pycri.images.registry import Credentials, Endpoint, Repository


def repo(base: str) -> Repository:
    return Repository(Endpoint(base), "x/y", Credentials("u", "p"))


def test_realm_over_https_gets_credentials() -> None:
    assert repo("https://registry-1.docker.io")._may_send_credentials_to("https://auth.docker.io/token")
    assert repo("http://127.0.0.1:5002")._may_send_credentials_to("https://auth.example/token")


def test_plain_http_realm_only_on_a_plain_registry_s_own_host() -> None:
    assert repo("http://127.0.0.1:5002")._may_send_credentials_to("http://127.0.0.1:5003/token")
    assert not repo("http://127.0.0.1:5002")._may_send_credentials_to("http://localhost:5003/token")
    assert not repo("https://reg.example")._may_send_credentials_to("http://reg.example/token")
    assert not repo("https://reg.example")._may_send_credentials_to("ftp://reg.example/token")


def test_redirects_keep_authorization_only_to_the_same_origin() -> None:
    from pycri.images.registry import _same_origin_or_upgrade

    assert _same_origin_or_upgrade("http://reg:5000/v2/a", "http://reg:5000/v2/b")
    assert _same_origin_or_upgrade("http://reg:5000/v2/a", "https://reg:5000/v2/b")
    assert not _same_origin_or_upgrade("https://reg/v2/a", "http://reg/v2/b")
    assert not _same_origin_or_upgrade("http://reg:5000/v2/a", "http://reg:5001/v2/b")
    assert not _same_origin_or_upgrade("https://reg/v2/a", "https://storage.example/blob")


def test_a_registry_token_with_a_line_break_is_invalid() -> None:
    import pytest

    from pycri.common.errors import InvalidArgument

    repository = Repository(Endpoint("http://reg"), "x/y", Credentials(registry_token="a\r\nX-Evil: 1"))
    with pytest.raises(InvalidArgument):
        repository._authorize('Bearer realm="http://reg/token"')
    good = Repository(Endpoint("http://reg"), "x/y", Credentials(registry_token="abc.def"))
    assert good._authorize('Bearer realm="http://reg/token"') and good._authorization == "Bearer abc.def"
