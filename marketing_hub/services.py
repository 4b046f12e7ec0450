"""Writes for the tenant layer: API keys and memberships."""

import hashlib
import hmac
import secrets

from django.db import transaction
from django.utils import timezone

from .models import ApiKey, Brand, Membership
from .tenancy import user_sync_groups

API_KEY_PREFIX = "mh"
# Touch last_used_at at most this often, so a busy key does not write on every request.
LAST_USED_RESOLUTION_SECONDS = 60


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_create(*, brand: Brand, name: str, role: str, created_by=None) -> tuple[ApiKey, str]:
    """Create a key and return it with its plaintext, which is never stored nor shown again."""
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    plaintext = f"{API_KEY_PREFIX}_{prefix}_{secret}"
    key = ApiKey.objects.create(
        brand=brand, name=name, role=role, prefix=prefix, key_hash=_hash(plaintext), created_by=created_by
    )
    return key, plaintext


def api_key_authenticate(*, plaintext: str) -> ApiKey | None:
    """The active key matching ``plaintext``, or None. Compares hashes in constant time."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
        return None
    key = ApiKey.objects.select_related("brand").filter(prefix=parts[1], revoked_at__isnull=True).first()
    if key is None or not hmac.compare_digest(key.key_hash, _hash(plaintext)):
        return None
    now = timezone.now()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def api_key_revoke(*, key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


@transaction.atomic
def membership_set(*, user, brand: Brand, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(user=user, brand=brand, defaults={"role": role})
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    user_sync_groups(user=user)
    return membership
