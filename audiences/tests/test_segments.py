"""Segment rules: the compiled ORM query and a plain Python evaluation always agree."""

import datetime as dt

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiences.models import Channel, Consent, ConsentStatus, Contact, ContactList, ListMembership
from audiences.segments import RuleError, compile_rules, evaluate, validate

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
WORDS = st.text(alphabet="abcxyz", min_size=0, max_size=4)
# Texts whose ->> rendering a number or boolean shares ("5", "true"): equality must still tell them apart.
MIXED = st.one_of(st.integers(0, 9), WORDS, st.integers(0, 9).map(str), st.sampled_from(["true", "5.0", "[1]"]))
TIERS = st.sampled_from(["gold", "silver", "premium", "", "Gold"])
ATTRIBUTES = st.fixed_dictionaries(
    {},
    optional={
        "tier": TIERS,
        "score": st.one_of(st.integers(-5, 50), st.floats(-5, 50, allow_nan=False).map(lambda f: round(f, 2))),
        "mixed": st.one_of(MIXED, st.booleans()),
        "seen": st.dates(dt.date(2026, 1, 1), dt.date(2026, 7, 1)).map(lambda d: d.isoformat()),
    },
)
CONTACTS = st.lists(
    st.fixed_dictionaries(
        {
            "first_name": WORDS,
            "country": st.sampled_from(["", "DE", "AT", "US"]),
            "email": st.one_of(st.none(), WORDS.map(lambda w: f"{w}@x.test")),
            "created_days_ago": st.integers(0, 200),
            "attributes": ATTRIBUTES,
            "lists": st.sets(st.integers(0, 1), max_size=2),
            "consents": st.dictionaries(
                st.sampled_from(["email", "sms"]), st.sampled_from(ConsentStatus.values), max_size=2
            ),
        }
    ),
    max_size=12,
)

TEXT_FIELD = st.sampled_from(["first_name", "country", "email"])
CONDITIONS = st.one_of(
    st.builds(
        lambda f, op, v: {"field": f, "op": op, "value": v},
        TEXT_FIELD,
        st.sampled_from(["equals", "not_equals", "contains", "starts_with", "gt", "lte"]),
        WORDS,
    ),
    st.builds(lambda f, v: {"field": f, "op": "in", "value": v}, TEXT_FIELD, st.lists(WORDS, min_size=1, max_size=3)),
    st.builds(lambda f, op: {"field": f, "op": op}, TEXT_FIELD, st.sampled_from(["is_set", "is_not_set"])),
    st.builds(
        lambda op, v: {"field": "attributes.tier", "op": op, "value": v},
        st.sampled_from(["equals", "not_equals", "contains", "starts_with"]),
        TIERS,
    ),
    st.builds(
        lambda op, v: {"field": "attributes.score", "op": op, "value": v},
        st.sampled_from(["equals", "gt", "gte", "lt", "lte", "not_equals"]),
        st.integers(-5, 50),
    ),
    st.builds(
        lambda lo, hi: {"field": "attributes.score", "op": "between", "value": [lo, hi]},
        st.integers(-5, 20),
        st.integers(10, 50),
    ),
    st.builds(
        lambda op, v: {"field": "attributes.mixed", "op": op, "value": v},
        st.sampled_from(["gt", "lt", "equals", "in"]),
        MIXED,
    ).map(lambda c: {**c, "value": [c["value"]]} if c["op"] == "in" else c),
    st.builds(
        lambda values: {"field": "attributes.mixed", "op": "in", "value": values},
        st.lists(MIXED, min_size=1, max_size=3),
    ),
    st.builds(
        lambda key, op: {"field": f"attributes.{key}", "op": op},
        st.sampled_from(["tier", "score", "nothing"]),
        st.sampled_from(["is_set", "is_not_set"]),
    ),
    st.builds(
        lambda op, days: {"field": "created_at", "op": op, "value": days},
        st.sampled_from(["within_last_days", "more_than_days_ago"]),
        st.integers(0, 200),
    ),
    st.builds(
        lambda op, days: {"field": "attributes.seen", "op": op, "value": days},
        st.sampled_from(["within_last_days", "more_than_days_ago"]),
        st.integers(0, 200),
    ),
    st.builds(
        lambda op, ids: {"field": "list", "op": op, "value": ids},
        st.sampled_from(["in", "not_in"]),
        st.lists(st.integers(0, 1), min_size=1, max_size=2),
    ),
    st.builds(
        lambda ch, op, status: {"field": f"consent.{ch}", "op": op, "value": status},
        st.sampled_from(["email", "sms"]),
        st.sampled_from(["equals", "not_equals"]),
        st.sampled_from(ConsentStatus.values),
    ),
)
RULES = st.recursive(
    CONDITIONS,
    lambda children: st.builds(
        lambda key, items: {key: items}, st.sampled_from(["and", "or"]), st.lists(children, max_size=3)
    ),
    max_leaves=6,
)


def _store(brand, contacts):
    lists = [ContactList.objects.create(brand=brand, name=f"list {i}") for i in range(2)]
    stored = []
    for index, data in enumerate(contacts):
        data["email"] = data["email"] and f"{index}{data['email']}"  # unique per brand
        contact = Contact.objects.create(
            brand=brand,
            first_name=data["first_name"],
            country=data["country"],
            email=data["email"],
            attributes=data["attributes"],
        )
        created = NOW - dt.timedelta(days=data["created_days_ago"], hours=1)
        Contact.objects.filter(pk=contact.pk).update(created_at=created)
        for list_index in data["lists"]:
            ListMembership.objects.create(contact_list=lists[list_index], contact=contact)
        for channel, status in data["consents"].items():
            Consent.objects.create(contact=contact, channel=channel, status=status, source="test", updated_at=NOW)
        stored.append((contact.pk, {**data, "created_at": created, "lists": {lists[i].pk for i in data["lists"]}}))
    return lists, stored


def _with_list_ids(rules, lists):
    if "and" in rules or "or" in rules:
        key = "and" if "and" in rules else "or"
        return {key: [_with_list_ids(child, lists) for child in rules[key]]}
    if rules["field"] == "list":
        return {**rules, "value": [lists[i].pk for i in rules["value"]]}
    return rules


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contacts=CONTACTS, rules=RULES)
def test_compiled_query_matches_python_evaluation(brand_a, contacts, rules):
    Contact.objects.filter(brand=brand_a).delete()
    ContactList.objects.filter(brand=brand_a).delete()
    lists, stored = _store(brand_a, contacts)
    rules = _with_list_ids(rules, lists)
    query = set(
        Contact.objects.filter(brand=brand_a).filter(compile_rules(rules, now=NOW)).values_list("pk", flat=True)
    )
    expected = {pk for pk, data in stored if evaluate(rules, data, NOW)}
    assert query == expected, rules


@pytest.mark.parametrize(
    ("rules", "path", "fragment"),
    [
        ({"and": [{"field": "email", "op": "equals", "value": "a"}, {"field": "nope", "op": "equals"}]},
         "and.1.field", "unknown field"),
        ({"or": [{"field": "email", "op": "sounds_like", "value": "a"}]}, "or.0.op", "unknown operator"),
        ({"and": [{"or": [{"field": "attributes.score", "op": "between", "value": [1]}]}]},
         "and.0.or.0.value", "two values"),
        ({"and": {"field": "email"}}, "and", "must be a list"),
        ({"field": "consent.fax", "op": "equals", "value": "subscribed"}, "field", "unknown channel"),
        ({"field": "created_at", "op": "within_last_days", "value": "soon"}, "value", "whole number"),
        ({"field": "email", "op": "in", "value": []}, "value", "list of 1 to 1000"),
        ({"field": "list", "op": "in", "value": ["x"]}, "value", "list id"),
        ({"and": [], "or": []}, "rules", "exactly one key"),
        ("email = 'x'", "rules", "must be an object"),
    ],
)  # fmt: skip
def test_malformed_rules_name_the_path_of_the_bad_node(rules, path, fragment):
    with pytest.raises(RuleError) as info:
        validate(rules)
    assert info.value.path == path
    assert fragment in info.value.message


def test_values_are_parameters_never_sql(brand_a):
    Contact.objects.create(brand=brand_a, first_name="x'; DROP TABLE audiences_contact; --")
    rules = {"field": "first_name", "op": "equals", "value": "x'; DROP TABLE audiences_contact; --"}
    assert Contact.objects.filter(compile_rules(rules)).count() == 1


def test_empty_group_selects_everyone_and_consent_reads_the_current_state(brand_a):
    contact = Contact.objects.create(brand=brand_a, email="a@x.test")
    Consent.objects.create(
        contact=contact, channel=Channel.EMAIL, status="subscribed", source="t", updated_at=timezone.now()
    )
    assert Contact.objects.filter(compile_rules({"and": []})).count() == 1
    rules = {"field": "consent.email", "op": "equals", "value": "subscribed"}
    assert list(Contact.objects.filter(compile_rules(rules))) == [contact]


@pytest.mark.django_db
def test_attribute_equality_tells_a_text_from_a_number_or_boolean_with_the_same_text(brand_a):
    """On PostgreSQL a text compares as ``->>`` text, where the number 5 and the text "5" look alike."""
    values = [5, "5", 5.0, True, "true", None, "gold", ["gold"]]
    ids = [Contact.objects.create(brand=brand_a, attributes={"v": value}).pk for value in values]
    ids.append(Contact.objects.create(brand=brand_a, attributes={}).pk)  # 8: no such key

    def members(op, value):
        rules = {"field": "attributes.v", "op": op, "value": value}
        found = set(
            Contact.objects.filter(brand=brand_a).filter(compile_rules(rules, NOW)).values_list("pk", flat=True)
        )
        return [position for position, pk in enumerate(ids) if pk in found]

    assert members("equals", "5") == [1]
    assert members("equals", 5) == [0, 2]  # 5 and 5.0 are one number
    assert members("in", ["true", "gold", 5]) == [0, 2, 4, 6]
    assert members("not_equals", "gold") == [0, 1, 2, 3, 4, 5, 7, 8]  # a missing key or a null is "not gold"
    assert members("not_in", ["5", "true"]) == [0, 2, 3, 5, 6, 7, 8]


@pytest.mark.django_db
def test_not_equals_on_a_text_field_keeps_the_contacts_without_one(brand_a):
    """A NULL email or a blank country is "not equal" to any text (NOT of a NULL comparison is NULL)."""
    blank = Contact.objects.create(brand=brand_a, email=None, country="")
    other = Contact.objects.create(brand=brand_a, email="b@x.test", country="AT")
    Contact.objects.create(brand=brand_a, email="a@x.test", country="DE")
    for field, value in (("email", "a@x.test"), ("country", "DE")):
        for op, operand in (("not_equals", value), ("not_in", [value])):
            rules = {"field": field, "op": op, "value": operand}
            found = set(
                Contact.objects.filter(brand=brand_a).filter(compile_rules(rules, NOW)).values_list("pk", flat=True)
            )
            assert found == {blank.pk, other.pk}, rules
