"""The phone fast path answers exactly as phonenumbers does, or not at all."""

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from audiences.normalize import normalize_phone
from audiences.phones import fast_e164

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
CALLING_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
TYPES = [t for t in PhoneNumberType.values() if t not in (PhoneNumberType.UNKNOWN,)]
FORMATS = [PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL]
PLAIN = "0123456789 +-()./"


def library(value: str, region: str):
    """What normalize did before the fast path: phonenumbers' verdict, None when it refuses."""
    try:
        number = phonenumbers.parse(value, region or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number) or not phonenumbers.is_valid_number(number):
        return None
    return (
        phonenumbers.format_number(number, PhoneNumberFormat.E164),
        phonenumbers.region_code_for_number(number) or "",
    )


def agrees(value: str, region: str) -> bool:
    fast = fast_e164(value, region)
    assert fast is None or fast == library(value, region), (value, region, fast, library(value, region))
    return fast is not None


def examples(region: str) -> list[str]:
    out = []
    for kind in TYPES:
        number = phonenumbers.example_number_for_type(region, kind)
        if number is not None:
            out += [phonenumbers.format_number(number, fmt) for fmt in FORMATS]
    return out


def mutations(text: str) -> list[str]:
    """Near misses: each digit changed, dropped or doubled, prefixes added, one more digit."""
    out = [text + "0", text + "9", "0" + text, "+" + text.lstrip("+"), "00" + text.lstrip("+"), text[:-1]]
    for i, char in enumerate(text):
        if char.isdigit():
            out += [text[:i] + str((int(char) + 1) % 10) + text[i + 1 :], text[:i] + text[i + 1 :]]
            out.append(text[:i] + char + text[i:])
    return out


@pytest.mark.parametrize("region", REGIONS)
def test_examples_and_their_near_misses_in_every_region(region):
    # every region's example numbers in three formats, read in that region, in DE and without
    # a region, each with ~40 single-character mutations: the fast path agrees or stays out
    for text in examples(region):
        for candidate in [text, *mutations(text)]:
            for default in (region, "DE", ""):
                agrees(candidate, default)


@pytest.mark.parametrize("region", ["DE", "AT", "CH", "FR", "GB", "US", "IT", "ES", "NL", "PL", "IN", "BR", "JP"])
def test_the_fast_path_answers_for_international_mobiles_and_the_brand_regions_local_ones(region):
    mobile = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
    e164 = phonenumbers.format_number(mobile, PhoneNumberFormat.E164)
    assert fast_e164(e164, "DE") == (e164, region)
    assert fast_e164(phonenumbers.format_number(mobile, PhoneNumberFormat.INTERNATIONAL), "") == (e164, region)
    if region == "DE":
        assert fast_e164("0151 2345 6789", "DE") == ("+4915123456789", "DE")
        assert fast_e164("(0151) 2345-6789", "DE") == ("+4915123456789", "DE")
        assert fast_e164("+49 (0)151 2345 6789", "DE") == ("+4915123456789", "DE")


def test_shapes_it_leaves_to_the_library():
    for value in ["+49 151 2345 6789 ext. 12", "tel:+49-151-23456789", "0151 2345 6789 #1", "\uff11\uff15\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19",
                  "+49151234567\uff189", "++49 151 23456789", "0800 FLOWERS", "49 151 23456789", "12"]:  # fmt: skip
        assert fast_e164(value, "DE") is None


def test_normalize_phone_keeps_the_librarys_results_and_messages():
    assert normalize_phone("0151 2345 6789", "de") == ("+4915123456789", "DE")
    assert normalize_phone("0049 151 23456789", "DE") == ("+4915123456789", "DE")
    assert normalize_phone("+1 416 555 0123", "DE") == ("+14165550123", "CA")
    with pytest.raises(ValueError, match="is not a valid phone number for region DE"):
        normalize_phone("+49 151 0000", "DE")
    with pytest.raises(ValueError, match=r"is not a phone number \("):
        normalize_phone("+999 1234 5678", "DE")


regions = st.sampled_from([*REGIONS, "", "DE", "DE", "DE"])


@st.composite
def near_examples(draw):
    """An example number of a random region and type, formatted, then damaged a little."""
    region = draw(st.sampled_from(REGIONS))
    number = phonenumbers.example_number_for_type(region, draw(st.sampled_from(TYPES)))
    text = phonenumbers.format_number(number, draw(st.sampled_from(FORMATS))) if number else "+1"
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from(PLAIN))
        if action == "insert":
            text = text[:position] + char + text[position:]
        elif action == "delete":
            text = text[:position] + text[position + 1 :]
        else:
            text = text[:position] + char + text[position + 1 :]
    return text


def calling_code_and_digits():
    return st.builds(
        lambda code, zero, digits, sep: f"+{code}{sep}{'0' if zero else ''}{digits}",
        st.sampled_from(CALLING_CODES),
        st.booleans(),
        st.text("0123456789", min_size=1, max_size=15),
        st.sampled_from(["", " ", "-", " (0) "]),
    )


def national_digits():
    return st.builds(
        lambda prefix, digits: prefix + digits,
        st.sampled_from(["", "0", "00", "1", "8", "9", "01", "011", "810"]),
        st.text("0123456789", min_size=1, max_size=15),
    )


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.one_of(st.text(PLAIN, max_size=24), near_examples(), calling_code_and_digits(), national_digits()),
    region=regions,
)
def test_property_fast_path_equals_phonenumbers(value, region):
    agrees(value.strip(), region)
