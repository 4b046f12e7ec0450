"""Normalizing what people type: emails, phone numbers (E.164), time zones, attribute values.

Each function returns the normalized value or raises ``ValueError`` with a message meant for the
person who typed it; callers add the row and column.
"""

import functools
import re
import zoneinfo

import phonenumbers

from .phones import fast_e164

# Deliberately plain: one @, a dot in the domain, no spaces. Full RFC 5322 accepts addresses no
# mail provider will deliver to, and Django's EmailValidator is ~10x slower on a million rows.
_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$")
_NUMBER = re.compile(r"^-?(0|[1-9]\d{0,14})(\.\d+)?$")


def normalize_email(value: str) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError(f"{value!r} is not a valid email address")
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}".lower()


def _parse_phone(value: str, region: str) -> tuple[str, str]:
    # no cache in front of the fast path: in an import every number is new, and a miss costs more than it
    return fast_e164(value, region) or _parse_phone_slowly(value, region)


@functools.lru_cache(maxsize=4096)
def _parse_phone_slowly(value: str, region: str) -> tuple[str, str]:
    try:
        number = phonenumbers.parse(value, region or None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{value!r} is not a phone number ({exc.args[0] if exc.args else 'unreadable'})") from None
    if not phonenumbers.is_possible_number(number) or not phonenumbers.is_valid_number(number):
        raise ValueError(f"{value!r} is not a valid phone number for region {region or '?'}")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, phonenumbers.region_code_for_number(number) or ""


def normalize_phone(value: str, region: str = "") -> tuple[str | None, str]:
    """``(E.164, country)`` for a number written locally (read in ``region``) or with a +prefix."""
    value = (value or "").strip()
    if not value:
        return None, ""
    if value.startswith("00"):
        value = "+" + value[2:]
    return _parse_phone(value, region.upper())


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def normalize_time_zone(value: str) -> str:
    value = (value or "").strip()
    if value and value not in _time_zones():
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin)")
    return value


def normalize_country(value: str) -> str:
    value = (value or "").strip().upper()
    if value and (len(value) != 2 or not value.isalpha()):
        raise ValueError(f"{value!r} is not a two-letter ISO country code")
    return value


def attribute_value(value: str):
    """CSV text to a JSON value: integers and decimals become numbers, the rest stays text."""
    text = value.strip()
    if _NUMBER.match(text):
        return float(text) if "." in text else int(text)
    return text


_BLANK_IS_NULL = frozenset(("external_id", "telegram_chat_id"))
CONTACT_TEXT_LIMITS = {
    "external_id": 128,
    "first_name": 100,
    "last_name": 100,
    "locale": 10,
    "telegram_chat_id": 32,
}


def clean_contact_fields(raw: dict, region: str) -> tuple[dict, dict[str, str]]:
    """Normalize the contact fields present in ``raw`` (text values as typed).

    Returns ``(values, errors)``: values holds only the fields given (blank addresses as None);
    errors maps a field name to why it was refused. Used by the API, the admin and CSV imports,
    so every way in applies the same rules.
    """
    # Written out field by field (no per-call closures): a 1M-row import calls this a million times.
    values: dict = {}
    errors: dict[str, str] = {}
    if "email" in raw:
        try:
            values["email"] = normalize_email(_text(raw["email"]))
        except ValueError as exc:
            errors["email"] = str(exc)
    country_given = bool(_text(raw.get("country")))
    if "phone" in raw:
        try:
            values["phone"], country = normalize_phone(_text(raw["phone"]), region)
            if country and not country_given:
                values["country"] = country
        except ValueError as exc:
            errors["phone"] = str(exc)
    if "whatsapp" in raw:
        try:
            values["whatsapp"] = normalize_phone(_text(raw["whatsapp"]), region)[0]
        except ValueError as exc:
            errors["whatsapp"] = str(exc)
    if "time_zone" in raw:
        try:
            values["time_zone"] = normalize_time_zone(_text(raw["time_zone"]))
        except ValueError as exc:
            errors["time_zone"] = str(exc)
    if country_given:
        try:
            values["country"] = normalize_country(_text(raw["country"]))
        except ValueError as exc:
            errors["country"] = str(exc)
    for field, limit in CONTACT_TEXT_LIMITS.items():
        if field in raw:
            value = _text(raw[field]).strip()
            if len(value) > limit:
                errors[field] = f"longer than {limit} characters"
            elif field in _BLANK_IS_NULL:
                values[field] = value or None
            else:
                values[field] = value
    if "attributes" in raw:
        if not isinstance(raw["attributes"], dict):
            errors["attributes"] = "must be an object of key: value"
        else:
            values["attributes"] = raw["attributes"]
    return values, errors


def _text(value) -> str:
    if type(value) is str:  # what CSV cells always are: the common case first
        return value
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{value!r} must be text")
    return str(value)
