"""The signed tokens in a message's links, exactly as ``django.core.signing`` makes them, cheaper.

Django's signers derive their HMAC key (a SHA-256 of salt and secret) and build a new HMAC on every
call; here the keyed HMAC is built once per salt and secret and copied per token. Same formats,
same keys: the views read them with ``signing.loads`` / ``Signer.unsign`` unchanged. Every email
carries several (unsubscribe, preferences when shown, the open pixel, each tracked link).
"""

import functools
import hashlib
import hmac
import json
import time
import zlib

from django.conf import settings
from django.core import signing
from django.utils.encoding import force_bytes


class FastSigner:
    def __init__(self, salt: str, secret: str):
        key = hashlib.sha256(force_bytes(salt + "signer") + force_bytes(secret)).digest()
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def sign(self, value: str) -> str:
        """``signing.Signer(salt=salt).sign(value)``."""
        mac = self._mac.copy()
        mac.update(value.encode())
        return f"{value}:{signing.b64_encode(mac.digest()).decode()}"

    def sign_object(self, value, compress: bool = True) -> str:
        """``signing.Signer(salt=salt).sign_object(value, compress=compress)``."""
        return self.sign(_encoded(value, compress))

    def dumps(self, value, compress: bool = True) -> str:
        """``signing.dumps(value, salt=salt, compress=compress)`` (timestamped)."""
        return self.sign(f"{_encoded(value, compress)}:{signing.b62_encode(int(time.time()))}")


def _encoded(value, compress: bool) -> str:
    data = compact_json(value).encode("latin-1")
    if compress:
        compressed = zlib.compress(data)
        if len(compressed) < len(data) - 1:
            return "." + signing.b64_encode(compressed).decode()
    return signing.b64_encode(data).decode()


def compact_json(value) -> str:
    """``json.dumps(value, separators=(",", ":"))``; a token's [id, contact id] or [id, contact id,
    channel] without the encoder's set-up (a third of a token's cost)."""
    if isinstance(value, list) and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return f"[{value[0]},{value[1]}]"
    if (
        isinstance(value, list)
        and len(value) == 3
        and type(value[0]) is int
        and type(value[1]) is int
        and isinstance(value[2], str)
        and value[2].isalnum()
        and value[2].isascii()
    ):
        return f'[{value[0]},{value[1]},"{value[2]}"]'
    return json.dumps(value, separators=(",", ":"))


@functools.lru_cache(maxsize=16)
def _signer(salt: str, secret: str) -> FastSigner:
    return FastSigner(salt, secret)


def signer(salt: str) -> FastSigner:
    """The signer of ``salt`` under the current ``SECRET_KEY``."""
    return _signer(salt, settings.SECRET_KEY)
