"""Tokens: the local ones generated into the home, and the named token lists servers check.

Only the standard library: the model server's environment imports this module too.

A token list names who holds each token, ``labeller:token`` entries separated by commas or new
lines (``MNISTCL_FEEDBACK_TOKENS``; on the cluster a Secret). The name is what the prediction log
records as the labeller of each label sent with that token.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import time
from pathlib import Path

MIN_TOKEN_CHARS = 16
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class CredentialError(ValueError):
    """A token list or token file is malformed; the message names the problem (never the token)."""


def secret_path(home: Path, name: str) -> Path:
    return Path(home) / "secrets" / name


def local_secret(home: Path, name: str, *, make=lambda: secrets.token_urlsafe(24)) -> str:
    """The secret ``<home>/secrets/<name>``, generated on first use (mode 0600, in a 0700 folder).
    Two processes asking at once get the same value: the file is created exclusively."""
    path = secret_path(home, name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the other process may still be writing it
            value = path.read_text().strip()
            if value:
                return value
            time.sleep(0.05)
        raise CredentialError(f"{path} is empty: delete it to have a new secret generated") from None
    value = make()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def parse_tokens(text: str, *, what: str = "token list") -> dict[str, str]:
    """``labeller:token`` entries -> {token: labeller}."""
    out: dict[str, str] = {}
    for i, entry in enumerate(e.strip() for e in re.split(r"[,\n]", text or "")):
        if not entry or entry.startswith("#"):
            continue
        name, sep, token = entry.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not _NAME.match(name):
            raise CredentialError(f"{what}: entry {i + 1} is not 'labeller:token' with a name of letters, digits, "
                                  "_ . @ -")
        if len(token) < MIN_TOKEN_CHARS:
            raise CredentialError(f"{what}: the token of {name!r} is shorter than {MIN_TOKEN_CHARS} characters")
        if token in out:
            raise CredentialError(f"{what}: {name!r} and {out[token]!r} share a token")
        out[token] = name
    return out


def who(tokens: dict[str, str], presented: str | None) -> str | None:
    """The name holding ``presented`` (compared in constant time with every token), or None."""
    if not presented:
        return None
    found = None
    for token, name in tokens.items():
        if hmac.compare_digest(token.encode(), presented.encode("utf-8", "surrogatepass")):
            found = name
    return found
