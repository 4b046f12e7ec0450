"""A fast path for the phone numbers people usually type, with phonenumbers' own verdicts.

``phonenumbers.parse`` + ``is_valid_number`` cost ~26 µs a number, most of it in generic
handling (RFC 3966, extensions, vanity letters, Unicode digits) that plain numbers never need,
and in per-call metadata lookups. ``fast_e164`` handles only the plain shapes — ASCII digits with
spaces, ``-``, ``.``, ``/``, parentheses and at most one leading ``+`` — and repeats, step by step,
what the library does with such a string: country code, national-prefix stripping, the length
checks, the region among those sharing a calling code, the number-type patterns. Its patterns are
the library's own metadata, compiled once per region. It answers only when the number is valid;
for anything else (invalid, or a shape it does not handle) it returns None and the caller asks
phonenumbers, so error messages stay the library's. ``audiences/tests/test_phones.py`` checks
that every answer equals phonenumbers' on random and adversarial inputs across all regions.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

_MIN_NSN, _MAX_NSN, _MAX_INPUT = 2, 17, 250  # phonenumbers' _MIN/_MAX_LENGTH_FOR_NSN, _MAX_INPUT_STRING_LENGTH
_PLAIN = re.compile(r"\+?[0-9 ().\-/]+", re.ASCII)
_PUNCTUATION = str.maketrans("", "", " ().-/+")
_NON_GEO = "001"


@dataclass(frozen=True, slots=True)
class _Region:
    """One region's metadata, compiled: what parsing and validating a number of it need."""

    code: str
    country_code: int
    general: re.Pattern | None
    lengths: tuple[int, ...]  # the general description's possible lengths, sorted
    local_lengths: frozenset[int]
    types: re.Pattern | None  # the general pattern and any number type that makes a number valid, as one
    national_prefix: re.Pattern | None
    transform_rule: str
    idd: re.Pattern | None
    leading_digits: re.Pattern | None

    def matches_general(self, number: str) -> bool:
        return self.general is not None and self.general.fullmatch(number) is not None

    def is_valid(self, number: str) -> bool:
        """``_number_type_helper(number) != UNKNOWN``."""
        if (self.lengths and len(number) not in self.lengths) or self.types is None:
            return False
        return self.types.fullmatch(number) is not None

    def strip_national_prefix(self, number: str) -> str | None:
        """``_maybe_strip_national_prefix_carrier_code`` (the number part); None: not handled here."""
        if not number or self.national_prefix is None:
            return number
        match = self.national_prefix.match(number)
        if not match:
            return number
        viable = self.matches_general(number)
        groups = match.groups()
        if not self.transform_rule or (groups and groups[-1] is None):
            stripped = number[match.end() :]
        elif not groups:
            return None  # the library would fail on this metadata; let it
        else:
            stripped = self.national_prefix.sub(self.transform_rule, number, count=1)
        if viable and not self.matches_general(stripped):
            return number
        return stripped

    def keeps_stripped(self, number: str) -> bool:
        """``_test_number_length(number)`` is IS_POSSIBLE or TOO_LONG."""
        size = len(number)
        if size in self.local_lengths:
            return False
        lengths = self.lengths
        if lengths[0] == size:
            return True
        if lengths[0] > size:
            return False
        if lengths[-1] < size:
            return True
        return size in lengths[1:]


def _with_lengths(pattern: str, lengths) -> str:
    """``pattern`` that also requires one of ``lengths`` digits (no lengths: any; [-1] means none, left out)."""
    if not lengths:
        return f"(?:{pattern})"
    sizes = "|".join(rf"\d{{{n}}}" for n in sorted(set(lengths)))
    return rf"(?=(?:{sizes})\Z)(?:{pattern})"


def _compile(pattern: str | None) -> re.Pattern | None:
    return re.compile(pattern) if pattern else None


@functools.cache
def _region(code: str) -> _Region | None:
    metadata = PhoneMetadata.metadata_for_region(code, None)
    if metadata is None:
        return None
    # Only "some type matches" is asked, so the order is free: mobile and fixed line first (what contact
    # lists hold) lets the regex stop at the first alternative instead of trying the rare types first.
    descs = [metadata.fixed_line]
    if not metadata.same_mobile_and_fixed_line_pattern:
        descs.insert(0, metadata.mobile)
    descs += [
        metadata.premium_rate, metadata.toll_free, metadata.shared_cost, metadata.voip, metadata.personal_number,
        metadata.pager, metadata.uan, metadata.voicemail,
    ]  # fmt: skip
    general = metadata.general_desc
    # _number_type_helper: the general pattern, then any type whose lengths and pattern both match
    alternatives = [
        _with_lengths(desc.national_number_pattern, desc.possible_length)
        for desc in descs
        if desc is not None and desc.national_number_pattern and list(desc.possible_length) != [-1]
    ]
    types = None
    if alternatives and general is not None and general.national_number_pattern:
        types = re.compile(rf"(?=(?:{general.national_number_pattern})\Z)(?:{'|'.join(alternatives)})")
    return _Region(
        code=code,
        country_code=metadata.country_code,
        general=_compile(general.national_number_pattern if general else None),
        lengths=tuple(sorted(general.possible_length)) if general else (),
        local_lengths=frozenset(general.possible_length_local_only) if general else frozenset(),
        types=types,
        national_prefix=_compile(metadata.national_prefix_for_parsing),
        transform_rule=metadata.national_prefix_transform_rule or "",
        idd=_compile(metadata.international_prefix),
        leading_digits=_compile(metadata.leading_digits),
    )


def _country_code(digits: str) -> int:
    """``_extract_country_code``: the first 1-3 digits that are a calling code, or 0."""
    if digits[0] == "0":
        return 0
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            return code
    return 0


def fast_e164(value: str, region: str) -> tuple[str, str] | None:
    """``(E.164, region)`` for a valid number in a plain shape; None means: ask phonenumbers.

    ``value`` is stripped; ``region`` is the upper-case default region ('' for none).
    """
    if len(value) > _MAX_INPUT or not _PLAIN.fullmatch(value) or "+" in value[1:]:
        return None
    digits = value.translate(_PUNCTUATION)
    if len(digits) < 3:  # two digits with punctuation are "not a number" to the library
        return None
    if value[0] == "+":
        country_code = _country_code(digits)
        if not country_code:
            return None
        main = COUNTRY_CODE_TO_REGION_CODE[country_code][0]
        if main == _NON_GEO:
            return None
        parsing = _region(main)
        national = digits[len(str(country_code)) :]
    else:
        parsing = _region(region) if region else None
        if parsing is None or (parsing.idd is not None and parsing.idd.match(digits)):
            return None
        if digits.startswith(str(parsing.country_code)):
            return None  # maybe the calling code without '+': the library decides
        country_code, national = parsing.country_code, digits
    if parsing is None or len(national) < _MIN_NSN or not parsing.lengths:
        return None
    stripped = parsing.strip_national_prefix(national)
    if stripped is None:
        return None
    if parsing.keeps_stripped(stripped):
        national = stripped
    if not _MIN_NSN <= len(national) <= _MAX_NSN:
        return None
    # is_possible_number: the lengths of the calling code's main region
    main = _region(COUNTRY_CODE_TO_REGION_CODE[country_code][0])
    if main is None or (len(national) not in main.lengths and len(national) not in main.local_lengths):
        return None
    regions = COUNTRY_CODE_TO_REGION_CODE[country_code]
    if len(regions) == 1:
        chosen = main
    else:  # _region_code_for_number_from_list
        chosen = None
        for code in regions:
            candidate = _region(code)
            if candidate is None:
                continue
            if candidate.leading_digits is not None:
                if candidate.leading_digits.match(national):
                    chosen = candidate
                    break
            elif candidate.is_valid(national):
                chosen = candidate
                break
        if chosen is None:
            return None
    if not chosen.is_valid(national):
        return None
    return f"+{country_code}{national}", chosen.code
