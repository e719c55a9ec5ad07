"""X-Twilio-Signature: base64(HMAC-SHA1(auth token, full URL + each POST param name and value, sorted by name))."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    payload = url + "".join(f"{k}{v}" for k, v in sorted(params, key=lambda kv: (kv[0], kv[1])))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def valid_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]], given: str | None) -> bool:
    if not given:
        return False
    return hmac.compare_digest(twilio_signature(auth_token, url, params), given)
