"""Redaction of credentials in trigger configs.

The API returns a trigger's config through `redact_config`, and nothing logs a
config without it. Secrets are replaced, not removed, so a client can see that one
is set; sending the placeholder back on update keeps the stored value (see
`validation.validate_update`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

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


def redact_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `config` with `secret`, `signing_secret` and credential headers
    replaced by REDACTED. The input is left untouched."""
    redacted = copy.deepcopy(dict(config))
    for key in SECRET_KEYS:
        if redacted.get(key) is not None:
            redacted[key] = REDACTED
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
    headers, old_headers = restored.get("headers"), stored.get("headers")
    if isinstance(headers, dict) and isinstance(old_headers, dict):
        old = {str(name).lower(): value for name, value in old_headers.items()}
        restored["headers"] = {
            name: old.get(str(name).lower(), value) if value == REDACTED else value
            for name, value in headers.items()
        }
    return restored


__all__ = ["REDACTED", "SECRET_KEYS", "is_sensitive_name", "redact_config", "redacted_to_send",
           "restore_redacted"]
