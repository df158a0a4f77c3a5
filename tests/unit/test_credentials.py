"""Token lists and local secrets (mnistcl/credentials.py) and the edge's reading of credentials."""

import base64
import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from mnistcl.credentials import CredentialError, local_secret, parse_tokens, who
from serving.edge import token_from_headers

pytestmark = pytest.mark.unit
TOKEN = "a-token-of-24-characters"


def test_token_lists():
    tokens = parse_tokens(f"alice:{TOKEN}, bob:{TOKEN[::-1]}\n# a comment\n")
    assert who(tokens, TOKEN) == "alice" and who(tokens, TOKEN[::-1]) == "bob"
    assert who(tokens, TOKEN + "x") is None and who(tokens, None) is None and who(tokens, "") is None
    assert who(tokens, "\ud800") is None  # a lone surrogate from JSON does not crash the comparison
    assert parse_tokens("") == {}
    for bad, needle in [("alice", "labeller:token"), ("alice:short", "shorter than 16"),
                        (f"a b:{TOKEN}", "labeller:token"), (f"alice:{TOKEN},bob:{TOKEN}", "share a token")]:
        with pytest.raises(CredentialError, match=needle) as err:
            parse_tokens(bad)
        assert TOKEN not in str(err.value)  # never the secret in a message


def test_local_secret_is_made_once_private_and_shared(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        values = set(pool.map(lambda _: local_secret(tmp_path, "feedback-token"), range(16)))
    assert len(values) == 1 and len(values.pop()) >= 24
    path = tmp_path / "secrets" / "feedback-token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    path.write_text("")
    with pytest.raises(CredentialError, match="is empty"):
        local_secret(tmp_path, "feedback-token")


def test_credentials_from_headers():
    def get(headers):
        return token_from_headers({k.lower(): v for k, v in headers.items()}.get)

    assert get({"Authorization": f"Bearer {TOKEN}"}) == TOKEN
    assert get({"X-Auth-Token": TOKEN}) == TOKEN  # SeldonClient's call credentials
    basic = base64.b64encode(f"alice:{TOKEN}".encode()).decode()
    assert get({"Authorization": f"Basic {basic}"}) == TOKEN  # http://alice:TOKEN@host
    assert get({"Authorization": "Basic %%%"}) is None and get({"Authorization": "Basic " + base64.b64encode(
        b"alice").decode()}) is None
    assert get({"Authorization": f"Token {TOKEN}"}) is None and get({}) is None
