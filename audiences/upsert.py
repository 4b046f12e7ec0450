"""Upserting many contacts at once (the API's bulk endpoint): per-item errors, the rest stored.

Each item is normalized with the same rules as every other way in, matched to an existing
contact by external id, then email, then phone, and written with one bulk insert and one bulk
update. Items that repeat a key of an earlier item in the same request update that item.
"""

from dataclasses import dataclass, field

from django.db import IntegrityError, transaction

from marketing_hub.models import Brand

from .models import Channel, Consent, ConsentStatus, Contact, SuppressionReason
from .normalize import clean_contact_fields
from .services import consent_set

KEYS = ("external_id", "email", "phone")
WRITABLE = (
    "external_id", "email", "phone", "whatsapp", "telegram_chat_id", "first_name", "last_name", "locale",
    "country", "time_zone", "attributes",
)  # fmt: skip
MAX_ITEMS = 10_000


@dataclass
class ItemResult:
    index: int
    status: str  # created / updated / unchanged / error
    id: int | None = None
    errors: dict[str, str] = field(default_factory=dict)


def _consents(raw, index_errors: dict) -> dict[str, str]:
    consents = raw.get("consent") or {}
    if not isinstance(consents, dict):
        index_errors["consent"] = 'must be an object like {"email": "subscribed"}'
        return {}
    for channel, status in consents.items():
        if channel not in Channel.values:
            index_errors[f"consent.{channel}"] = f"unknown channel; use one of {', '.join(Channel.values)}"
        elif status not in ConsentStatus.values:
            index_errors[f"consent.{channel}"] = f"must be one of {', '.join(ConsentStatus.values)}"
    return consents


def bulk_upsert(
    brand: Brand, items: list[dict], source: str = "api", actor: str = "", *, _fallback: bool = True
) -> list[ItemResult]:
    if len(items) > MAX_ITEMS:
        raise ValueError(f"at most {MAX_ITEMS} contacts per request, got {len(items)}")
    results: list[ItemResult] = []
    cleaned: list[tuple[int, dict, dict]] = []
    for index, raw in enumerate(items):
        if not isinstance(raw, dict):
            results.append(ItemResult(index, "error", errors={"non_field_errors": "must be an object"}))
            continue
        unknown = set(raw) - set(WRITABLE) - {"consent", "id", "brand"}
        values, errors = clean_contact_fields({k: v for k, v in raw.items() if k in WRITABLE}, brand.default_region)
        errors.update({name: "unknown field" for name in sorted(unknown)})
        consents = _consents(raw, errors)
        if not errors and not any(values.get(key) for key in KEYS):
            errors["non_field_errors"] = "give at least one of external_id, email or phone to identify the contact"
        if errors:
            results.append(ItemResult(index, "error", errors=errors))
            continue
        if values.get("phone") and "whatsapp" not in values:
            values["whatsapp"] = values["phone"]
        results.append(ItemResult(index, "pending"))
        cleaned.append((index, values, consents))

    existing = _existing(brand, cleaned)
    erased = _erased(brand, cleaned)
    new: dict[int, Contact] = {}  # index of the first item that created it
    touched: dict[int, Contact] = {}
    by_key: dict[tuple[str, str], Contact] = {}
    for index, values, _ in cleaned:
        matches = {
            key: existing.get((key, values[key])) or by_key.get((key, values[key])) for key in KEYS if values.get(key)
        }
        found = {id(c): c for c in matches.values() if c is not None}
        if len(found) > 1:
            keys = ", ".join(k for k, c in matches.items() if c is not None)
            results[index] = ItemResult(
                index, "error", errors={"non_field_errors": f"{keys} belong to different contacts"}
            )
            continue
        contact = next(iter(found.values()), None)
        if contact is None:
            blocked = [key for key in ("email", "phone") if values.get(key) and (key, values[key]) in erased]
            if blocked:
                results[index] = ItemResult(
                    index, "error", errors={blocked[0]: "this address was erased at the contact's request"}
                )
                continue
            contact = Contact(brand=brand, **values)
            new[index] = contact
            results[index].status = "created"
        else:
            if "attributes" in values:  # attributes merge: a key not given is kept
                values = {**values, "attributes": {**contact.attributes, **values["attributes"]}}
            changed = [name for name, value in values.items() if getattr(contact, name) != value]
            for name in changed:
                setattr(contact, name, values[name])
            if contact.pk is not None:
                if changed:
                    touched[contact.pk] = contact
                results[index].status = "updated" if changed or contact.pk in touched else "unchanged"
            else:
                results[index].status = "updated"
        for key in KEYS:
            if getattr(contact, key):
                by_key[(key, getattr(contact, key))] = contact
        results[index].contact = contact

    try:
        with transaction.atomic():
            Contact.objects.bulk_create(list(new.values()), batch_size=2000)
            if touched:
                Contact.objects.bulk_update(list(touched.values()), list(WRITABLE), batch_size=2000)
            _apply_consents(cleaned, results, source, actor)
    except IntegrityError:
        if not _fallback:
            raise
        # Someone else stored one of these keys meanwhile: fall back to one item at a time.
        return _one_by_one(brand, items, source, actor)
    for result in results:
        contact = getattr(result, "contact", None)
        if contact is not None:
            result.id = contact.pk
            del result.contact
    return results


def _apply_consents(cleaned, results, source: str, actor: str) -> None:
    wanted = [(results[i].contact, consents) for i, _, consents in cleaned if consents and results[i].status != "error"]
    if not wanted:
        return
    current = {
        (c.contact_id, c.channel): c.status
        for c in Consent.objects.filter(contact_id__in=[contact.pk for contact, _ in wanted])
    }
    for contact, consents in wanted:
        for channel, status in consents.items():
            if current.get((contact.pk, channel)) != status:
                consent_set(contact, channel, status, source, actor)
                current[(contact.pk, channel)] = status


def _existing(brand: Brand, cleaned) -> dict[tuple[str, str], Contact]:
    found: dict[tuple[str, str], Contact] = {}
    by_pk: dict[int, Contact] = {}
    for key in KEYS:
        values = list({values[key] for _, values, _ in cleaned if values.get(key)})
        for start in range(0, len(values), 5000):
            for contact in Contact.objects.filter(brand=brand, **{f"{key}__in": values[start : start + 5000]}):
                contact = by_pk.setdefault(contact.pk, contact)
                found[(key, getattr(contact, key))] = contact
    return found


def _erased(brand: Brand, cleaned) -> set[tuple[str, str]]:
    from .models import Suppression

    out = set()
    for key, channel in (("email", Channel.EMAIL), ("phone", Channel.SMS)):
        values = [values[key] for _, values, _ in cleaned if values.get(key)]
        rows = Suppression.objects.filter(
            brand=brand, channel=channel, reason=SuppressionReason.ERASED, address__in=values
        ).values_list("address", flat=True)
        out.update((key, address) for address in rows)
    return out


def _one_by_one(brand, items, source, actor) -> list[ItemResult]:
    results = []
    for index, item in enumerate(items):
        try:
            with transaction.atomic():
                (result,) = bulk_upsert(brand, [item], source, actor, _fallback=False)
        except IntegrityError as exc:
            result = ItemResult(index, "error", errors={"non_field_errors": f"conflicts with another contact ({exc})"})
        result.index = index
        results.append(result)
    return results
