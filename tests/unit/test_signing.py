"""Signed deliveries follow Standard Webhooks (https://www.standardwebhooks.com)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from triggerd.worker.signing import secret_key, sign, signature_headers

# The test vector published with the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_reproduces_the_specification_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_whsec_secrets_are_base64_decoded() -> None:
    assert secret_key(SPEC_SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    unpadded = "whsec_" + base64.b64encode(b"0123456789").decode().rstrip("=")
    assert secret_key(unpadded) == b"0123456789"


def test_other_secrets_are_used_as_written() -> None:
    assert secret_key("my shared secret") == b"my shared secret"
    assert secret_key("whsec_not base64!") == b"whsec_not base64!"
    expected = hmac.new(b"raw", b"evt.1700000000.{}", hashlib.sha256).digest()
    assert sign("raw", "evt", 1700000000, b"{}") == "v1," + base64.b64encode(expected).decode()


def test_headers() -> None:
    headers = signature_headers(SPEC_SECRET, SPEC_ID, SPEC_BODY, SPEC_TIMESTAMP)
    assert headers == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    now = signature_headers("s", "id", b"{}")
    assert abs(int(now["webhook-timestamp"]) - time.time()) < 5


def test_the_reference_library_verifies_our_signature() -> None:
    standardwebhooks = pytest.importorskip("standardwebhooks")
    body = b'{"order": 1}'
    headers = signature_headers(SPEC_SECRET, "evt_1", body)
    assert standardwebhooks.Webhook(SPEC_SECRET).verify(body, headers) == {"order": 1}
    # ... and rejects it for another body
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SPEC_SECRET).verify(b'{"order": 2}', headers)
