"""Credentials at rest: MultiFernet over ``settings.FIELD_ENCRYPTION_KEYS``.

The first key encrypts; every key decrypts, so a key is rotated by putting the new one first,
running ``manage.py rotate_credentials`` (re-encrypts every row with the first key), then
dropping the old one.
"""

import functools
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@functools.lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty: credentials cannot be encrypted.")
    return MultiFernet([Fernet(key.encode() if isinstance(key, str) else key) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt_json(value: dict) -> str:
    return fernet().encrypt(json.dumps(value, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> dict:
    if not token:
        return {}
    try:
        return json.loads(fernet().decrypt(token.encode()))
    except InvalidToken:
        raise ImproperlyConfigured(
            "Stored credentials cannot be decrypted with FIELD_ENCRYPTION_KEYS (was a key removed too early?)."
        ) from None


def rotate(token: str) -> str:
    return fernet().rotate(token.encode()).decode() if token else token


def mask(secret: str) -> str:
    """What the admin may show of a secret: its length class and last four characters."""
    secret = str(secret or "")
    if not secret:
        return ""
    return "•" * 8 + (secret[-4:] if len(secret) >= 12 else "")
