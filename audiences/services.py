"""What changes audiences: consent, suppressions, list membership, Telegram links, GDPR.

Views, admin actions, importers and higher apps (channels' inbound keywords) call these; nothing
else writes Consent or Suppression rows, so the audit trail is always complete.
"""

import datetime as dt
from collections.abc import Iterable

from django.core import signing
from django.db import transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from marketing_hub.models import Brand

from .models import (
    ADDRESS_FIELD,
    WHATSAPP_OF_ITS_OWN,
    Channel,
    Consent,
    ConsentEvent,
    ConsentStatus,
    Contact,
    ContactList,
    ListMembership,
    Suppression,
    SuppressionReason,
)

# Higher apps add their part of a contact's GDPR export: receivers return {"section": data}.
# sender: Contact class; kwargs: contact
contact_export_requested = Signal()
# Sent before a contact is erased, so higher apps can scrub what they hold. kwargs: contact
contact_erased = Signal()

_TELEGRAM_SALT = "audiences.telegram-link"
_CONFIRM_SALT = "audiences.email-confirm"


# -- consent ---------------------------------------------------------------------------------------
def consent_set(
    contact: Contact, channel: str, status: str, source: str, actor: str = "", at: dt.datetime | None = None
) -> Consent:
    """Record a consent change: the history row always, the current row when it changed."""
    Channel(channel), ConsentStatus(status)
    at = at or timezone.now()
    with transaction.atomic():
        ConsentEvent.objects.create(
            contact=contact, channel=channel, status=status, source=source[:200], actor=actor[:150], created_at=at
        )
        consent, _ = Consent.objects.update_or_create(
            contact=contact, channel=channel, defaults={"status": status, "source": source[:200], "updated_at": at}
        )
    return consent


def consent_bulk_subscribe(contact_ids: Iterable[int], channel: str, source: str, actor: str = "") -> int:
    """Subscribe many contacts at once (imports): history rows plus one upsert; returns how many changed."""
    ids = list(contact_ids)
    if not ids:
        return 0
    at = timezone.now()
    already = set(
        Consent.objects.filter(contact_id__in=ids, channel=channel, status=ConsentStatus.SUBSCRIBED).values_list(
            "contact_id", flat=True
        )
    )
    changed = [cid for cid in ids if cid not in already]
    with transaction.atomic():
        ConsentEvent.objects.bulk_create(
            ConsentEvent(
                contact_id=cid,
                channel=channel,
                status=ConsentStatus.SUBSCRIBED,
                source=source,
                actor=actor,
                created_at=at,
            )
            for cid in changed
        )
        Consent.objects.bulk_create(
            (
                Consent(contact_id=cid, channel=channel, status=ConsentStatus.SUBSCRIBED, source=source, updated_at=at)
                for cid in changed
            ),
            update_conflicts=True,
            unique_fields=["contact", "channel"],
            update_fields=["status", "source", "updated_at"],
            batch_size=5000,
        )
    return len(changed)


def contacts_by_address(brand: Brand, channel: str, address: str):
    field = ADDRESS_FIELD.get(channel)
    if field is None or not address:
        return Contact.objects.none()
    contacts = Contact.objects.filter(brand=brand, **{field: address})
    if field == "whatsapp":  # the same contacts, said so that the phone's index and the WhatsApp one serve it
        contacts = contacts.filter(Q(phone=address) | WHATSAPP_OF_ITS_OWN)
    return contacts


def consent_set_by_address(
    brand: Brand, channel: str, address: str, status: str, source: str, actor: str = ""
) -> Contact | None:
    """Consent for whoever holds ``address`` on ``channel`` (inbound keywords); None if nobody does."""
    contact = None
    for contact in contacts_by_address(brand, channel, address):
        consent_set(contact, channel, status, source, actor)
    return contact


def consent_status(contact: Contact, channel: str) -> str | None:
    consent = Consent.objects.filter(contact=contact, channel=channel).first()
    return consent.status if consent else None


def email_confirmation_token(contact: Contact) -> str:
    return signing.dumps({"c": contact.pk, "b": contact.brand_id}, salt=_CONFIRM_SALT, compress=True)


def email_request_confirmation(contact: Contact, source: str, actor: str = "") -> str:
    """Double opt-in: consent is pending until the link with the returned token is followed."""
    consent_set(contact, Channel.EMAIL, ConsentStatus.PENDING, source, actor)
    return email_confirmation_token(contact)


def email_confirm(token: str, max_age_days: int = 14) -> Contact:
    """Follow a double opt-in link. Raises ``signing.BadSignature`` (or its SignatureExpired)."""
    data = signing.loads(token, salt=_CONFIRM_SALT, max_age=dt.timedelta(days=max_age_days))
    contact = Contact.objects.get(pk=data["c"], brand_id=data["b"], erased_at__isnull=True)
    if consent_status(contact, Channel.EMAIL) != ConsentStatus.SUBSCRIBED:
        consent_set(contact, Channel.EMAIL, ConsentStatus.SUBSCRIBED, "form:double-opt-in", "contact")
    return contact


def unsubscribe(contact: Contact, channel: str, source: str, actor: str = "") -> Consent:
    return consent_set(contact, channel, ConsentStatus.UNSUBSCRIBED, source, actor)


# -- suppression -------------------------------------------------------------------------------------
def suppression_add(brand: Brand, channel: str, address: str, reason: str, source: str = "") -> Suppression:
    SuppressionReason(reason)
    suppression, _ = Suppression.objects.get_or_create(
        brand=brand, channel=channel, address=address, reason=reason, defaults={"source": source[:200]}
    )
    return suppression


def suppression_remove(brand: Brand, channel: str, address: str, reasons: Iterable[str] = ("stop",)) -> int:
    """Lift suppressions of the given reasons only: START lifts a STOP, never a hard bounce."""
    deleted, _ = Suppression.objects.filter(
        brand=brand, channel=channel, address=address, reason__in=list(reasons)
    ).delete()
    return deleted


def is_suppressed(brand: Brand, channel: str, address: str | None) -> bool:
    return bool(address) and Suppression.objects.filter(brand=brand, channel=channel, address=address).exists()


def suppressed_q(channel: str) -> Q:
    """A ``Q`` on Contact: the contact's address on ``channel`` is suppressed in its brand."""
    from django.db.models import Exists, OuterRef

    field = ADDRESS_FIELD.get(channel)
    if field is None:
        return Q(pk__in=[])
    return Q(
        Exists(Suppression.objects.filter(brand_id=OuterRef("brand_id"), channel=channel, address=OuterRef(field)))
    )


# -- lists -------------------------------------------------------------------------------------------
def list_add(contact_list: ContactList, contact_ids: Iterable[int]) -> int:
    ids = list(
        Contact.objects.filter(brand_id=contact_list.brand_id, pk__in=list(contact_ids)).values_list("pk", flat=True)
    )
    before = contact_list.memberships.count()
    ListMembership.objects.bulk_create(
        (ListMembership(contact_list=contact_list, contact_id=cid) for cid in ids),
        ignore_conflicts=True,
        batch_size=5000,
    )
    return contact_list.memberships.count() - before


def list_remove(contact_list: ContactList, contact_ids: Iterable[int]) -> int:
    deleted, _ = ListMembership.objects.filter(contact_list=contact_list, contact_id__in=list(contact_ids)).delete()
    return deleted


# -- Telegram ----------------------------------------------------------------------------------------
def telegram_link_token(contact: Contact) -> str:
    """The payload of a ``t.me/<bot>?start=<token>`` link (Telegram allows 64 chars of [A-Za-z0-9_-])."""
    return signing.Signer(salt=_TELEGRAM_SALT).sign(f"{contact.brand_id}-{contact.pk}").replace(":", "_")


def contact_from_telegram_token(brand: Brand, token: str) -> Contact | None:
    try:
        value = signing.Signer(salt=_TELEGRAM_SALT).unsign(token.replace("_", ":", 1))
    except signing.BadSignature:
        return None
    brand_id, _, contact_id = value.partition("-")
    if int(brand_id) != brand.pk:
        return None
    return Contact.objects.filter(brand=brand, pk=int(contact_id), erased_at__isnull=True).first()


def contact_link_telegram(contact: Contact, chat_id: str, source: str = "telegram:/start") -> Contact:
    with transaction.atomic():
        contact.telegram_chat_id = str(chat_id)
        contact.save(update_fields=["telegram_chat_id", "updated_at"])
        consent_set(contact, Channel.TELEGRAM, ConsentStatus.SUBSCRIBED, source, "telegram")
    return contact


# -- GDPR --------------------------------------------------------------------------------------------
PII_FIELDS = ("external_id", "email", "phone", "whatsapp", "telegram_chat_id", "first_name", "last_name")


def contact_export(contact: Contact) -> dict:
    """Everything we hold about one contact, as JSON-ready data (GDPR art. 15/20)."""
    data = {
        "profile": {
            "id": contact.pk,
            "brand": contact.brand.slug,
            **{field: getattr(contact, field) for field in PII_FIELDS},
            "locale": contact.locale,
            "country": contact.country,
            "time_zone": contact.time_zone,
            "attributes": contact.attributes,
            "created_at": contact.created_at.isoformat(),
            "updated_at": contact.updated_at.isoformat(),
        },
        "consents": [
            {"channel": c.channel, "status": c.status, "source": c.source, "updated_at": c.updated_at.isoformat()}
            for c in contact.consents.order_by("channel")
        ],
        "consent_history": [
            {
                "channel": e.channel,
                "status": e.status,
                "source": e.source,
                "actor": e.actor,
                "at": e.created_at.isoformat(),
            }
            for e in contact.consent_events.order_by("created_at", "id")
        ],
        "lists": sorted(contact.lists.values_list("name", flat=True)),
    }
    for _receiver, section in contact_export_requested.send(sender=Contact, contact=contact):
        if section:
            data.update(section)
    return data


def contact_erase(contact: Contact, actor: str = "") -> Contact:
    """Replace PII, keep an 'erased' suppression per address so the person is never re-imported.

    The row itself stays (with its id) so aggregate counts and message statistics still add up.
    """
    if contact.erased_at:
        return contact
    with transaction.atomic():
        contact_erased.send(sender=Contact, contact=contact)
        for channel, field in ADDRESS_FIELD.items():
            address = getattr(contact, field)
            if address:
                suppression_add(contact.brand, channel, address, SuppressionReason.ERASED, f"gdpr:{actor}")
        for field in PII_FIELDS:
            setattr(contact, field, None if field not in ("first_name", "last_name") else "")
        contact.attributes = {}
        contact.erased_at = timezone.now()
        contact.save()
        contact.consent_events.update(actor="")
        contact.memberships.all().delete()
    return contact


def erased_addresses(brand: Brand, channel: str, addresses: Iterable[str]) -> set[str]:
    return set(
        Suppression.objects.filter(
            brand=brand, channel=channel, reason=SuppressionReason.ERASED, address__in=list(addresses)
        ).values_list("address", flat=True)
    )


# -- segments ----------------------------------------------------------------------------------------
def segment_members(segment, now=None):
    """The live (not erased) contacts of the segment's brand its rules accept."""
    from .segments import compile_rules

    return Contact.objects.filter(brand_id=segment.brand_id, erased_at__isnull=True).filter(
        compile_rules(segment.rules, now=now)
    )
