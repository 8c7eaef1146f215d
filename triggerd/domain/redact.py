"""Redaction of credentials in trigger configs.

The API returns a trigger's config through `redact_config`, and nothing logs a
config without it. Secrets are replaced, not removed, so a client can see that one
is set; sending the placeholder back on update keeps the stored value (see
`restore_redacted`). A password in the endpoint URL (`https://user:pw@host/`) is a
secret too: it reads `https://user:***@host/`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

REDACTED = "***"

SECRET_KEYS = ("secret", "signing_secret")
_SENSITIVE_NAMES = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
# token/secret/key, and what else names a credential in the wild (X-Auth,
# X-Session, X-Hub-Signature, X-Db-Password).
_SENSITIVE_PARTS = ("token", "secret", "key", "password", "passwd", "credential", "auth",
                    "session", "signature")  # fmt: skip


def is_sensitive_name(name: str) -> bool:
    """Whether a header (or field) named `name` carries a credential.

    Authorization, Proxy-Authorization, Cookie and Set-Cookie, plus any name
    containing token, secret, key, password, passwd, credential, auth, session or
    signature (case-insensitive).
    """
    if not isinstance(name, str):
        return False
    lowered = name.lower()
    return lowered in _SENSITIVE_NAMES or any(part in lowered for part in _SENSITIVE_PARTS)


def redact_url(url: str) -> str:
    """`url` with the password of its user information, if any, replaced by REDACTED;
    anything that is not a URL with a password comes back as it is."""
    if not isinstance(url, str) or "@" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password:
        return url
    return _with_password(url, REDACTED)


def _with_password(url: str, password: str) -> str:
    """`url`, a URL with user information, with `password` as its password."""
    parts = urlsplit(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:{password}@{host}").geturl()


def _restore_url(url: Any, stored: Any) -> Any:
    """`url` sent on update with the stored password in place of REDACTED, when it still
    names the stored URL's user and host: a path or query may change around it, but a
    password goes to another host only when it is typed again."""
    if not (isinstance(url, str) and isinstance(stored, str)) or url == stored:
        return url
    try:
        sent, old = urlsplit(url), urlsplit(stored)
    except ValueError:
        return url
    if sent.password != REDACTED or not old.password:
        return url
    if (sent.username, sent.netloc.rpartition("@")[2]) != \
            (old.username, old.netloc.rpartition("@")[2]):
        return url
    return _with_password(url, old.password)


def redact_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `config` with `secret`, `signing_secret` and credential headers
    replaced by REDACTED. The input is left untouched."""
    redacted = copy.deepcopy(dict(config))
    for key in SECRET_KEYS:
        if redacted.get(key) is not None:
            redacted[key] = REDACTED
    if "endpoint" in redacted:
        redacted["endpoint"] = redact_url(redacted["endpoint"])
    headers = redacted.get("headers")
    if isinstance(headers, dict):
        for name in headers:
            if is_sensitive_name(name):
                headers[name] = REDACTED
    return redacted


def redacted_to_send(config: Mapping[str, Any]) -> dict[str, Any]:
    """`redact_config` for a result serialized at once (an API answer, an audit entry):
    the top level and `headers` are copied, so the input is left untouched, but the
    values not replaced (a payload) are the input's own, not deep copies (which cost
    more than the rest of an answer). The result must not be changed."""
    redacted = dict(config)
    for key in SECRET_KEYS:
        if redacted.get(key) is not None:
            redacted[key] = REDACTED
    if "endpoint" in redacted:
        redacted["endpoint"] = redact_url(redacted["endpoint"])
    headers = redacted.get("headers")
    if isinstance(headers, dict):
        redacted["headers"] = {name: REDACTED if is_sensitive_name(name) else value
                               for name, value in headers.items()}  # fmt: skip
    return redacted


def restore_redacted(config: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """`config` (sent on update) with every REDACTED secret or credential header that
    `stored` has replaced by the stored value, so a config read back from the API can
    be sent again unchanged. Shallow: only the top level and `headers` are copied."""
    restored = dict(config)
    for key in SECRET_KEYS:
        if restored.get(key) == REDACTED and isinstance(stored.get(key), str):
            restored[key] = stored[key]
    if "endpoint" in restored:
        restored["endpoint"] = _restore_url(restored["endpoint"], stored.get("endpoint"))
    headers, old_headers = restored.get("headers"), stored.get("headers")
    if isinstance(headers, dict) and isinstance(old_headers, dict):
        old = {str(name).lower(): value for name, value in old_headers.items()}
        restored["headers"] = {
            name: old.get(str(name).lower(), value) if value == REDACTED else value
            for name, value in headers.items()
        }
    return restored


__all__ = ["REDACTED", "SECRET_KEYS", "is_sensitive_name", "redact_config", "redact_url",
           "redacted_to_send", "restore_redacted"]
