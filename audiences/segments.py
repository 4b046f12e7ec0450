"""Segment rules: a JSON tree of AND/OR groups and conditions, compiled to ORM ``Q`` objects.

A group is ``{"and": [node, ...]}`` or ``{"or": [node, ...]}``; a condition is
``{"field": ..., "op": ..., "value": ...}`` where ``field`` is

- a contact field (``email``, ``country``, ``created_at``, ...),
- ``attributes.<key>`` for a free attribute,
- ``list`` (value: a list id, or ids for ``in``/``not_in``),
- ``consent.<channel>`` (value: subscribed / unsubscribed / pending),
- a registered condition (``engagement.opened`` ...) that a higher app added with ``register``.

Nothing is ever turned into SQL text here: every value goes through the ORM as a parameter. A
malformed tree raises ``RuleError`` naming the path of the bad node (``and.2.value``) and why.
``evaluate`` is the same semantics in plain Python, used by the property test to prove the two agree.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.fields.json import KT, KeyTransform
from django.db.models.functions import Coalesce
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    IContains,
    In,
    IStartsWith,
    LessThan,
    LessThanOrEqual,
)
from django.utils import timezone

from .models import Channel, ConsentStatus, Contact, ListMembership, consent_column

MAX_DEPTH = 8
MAX_CONDITIONS = 100

TEXT_FIELDS = (
    "external_id", "email", "phone", "whatsapp", "telegram_chat_id", "first_name", "last_name", "locale",
    "country", "time_zone",
)  # fmt: skip
DATE_FIELDS = ("created_at", "updated_at")
COMPARISONS = ("gt", "gte", "lt", "lte")
OPERATORS = (
    "equals", "not_equals", "in", "not_in", "contains", "starts_with", *COMPARISONS, "between",
    "is_set", "is_not_set", "within_last_days", "more_than_days_ago",
)  # fmt: skip
NEGATED = {"not_equals": "equals", "not_in": "in", "is_not_set": "is_set"}


class RuleError(ValueError):
    def __init__(self, path: str, message: str):
        super().__init__(f"{path or 'rules'}: {message}")
        self.path = path or "rules"
        self.message = message


@dataclass(frozen=True)
class Registered:
    """A condition a higher app provides: ``compile(op, value, path) -> Q`` on Contact."""

    operators: tuple[str, ...]
    compile: Callable[[str, object, str], Q]
    label: str = ""


REGISTRY: dict[str, Registered] = {}


def register(field: str, operators: tuple[str, ...], compile: Callable[[str, object, str], Q], label: str = ""):
    """Let a higher layer add a condition (e.g. ``engagement.opened``) without audiences importing it."""
    REGISTRY[field] = Registered(tuple(operators), compile, label)


# -- validation ------------------------------------------------------------------------------------------
def _scalar(value, path: str):
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        raise RuleError(path, "must be a text or a number")
    if not isinstance(value, str | int | float):
        raise RuleError(path, "must be a text or a number")
    return value


def _days(value, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 36500:
        raise RuleError(path, "must be a whole number of days between 0 and 36500")
    return value


def _check_value(kind: str, op: str, value, path: str):
    """The value normalized for ``op`` on a field of ``kind`` (text / date / attribute)."""
    if op in ("is_set", "is_not_set"):
        return None
    if op in ("within_last_days", "more_than_days_ago"):
        if kind == "text":
            raise RuleError(path, f"'{op}' needs a date field or attribute")
        return _days(value, path)
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or len(value) > 1000:
            raise RuleError(path, "must be a list of 1 to 1000 values")
        return [_scalar(v, f"{path}.{i}") for i, v in enumerate(value)]
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise RuleError(path, "must be a list of two values [low, high]")
        low, high = (_scalar(v, f"{path}.{i}") for i, v in enumerate(value))
        if isinstance(low, str) != isinstance(high, str):
            raise RuleError(path, "both ends must be numbers, or both texts")
        return [low, high]
    value = _scalar(value, path)
    if kind == "date":
        if not isinstance(value, str):
            raise RuleError(path, "must be an ISO date or date-time")
        return _parse_datetime(value, path)
    if kind == "text" and op in ("contains", "starts_with", "equals", "not_equals") and not isinstance(value, str):
        return str(value)
    return value


def _parse_datetime(value: str, path: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise RuleError(path, f"{value!r} is not an ISO date or date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def validate(rules, path: str = "") -> None:
    """Raise ``RuleError`` for the first malformed node; ``compile`` calls it for you."""
    count = [0]
    _validate(rules, path, 0, count)


def _validate(node, path: str, depth: int, count: list[int]) -> None:
    join = lambda key: f"{path}.{key}" if path else str(key)  # noqa: E731
    if not isinstance(node, dict):
        raise RuleError(path, "must be an object: a group {'and': [...]} / {'or': [...]} or a condition")
    if depth > MAX_DEPTH:
        raise RuleError(path, f"groups nest deeper than {MAX_DEPTH}")
    if set(node) & {"and", "or"}:
        if len(node) != 1:
            raise RuleError(path, "a group has exactly one key, 'and' or 'or'")
        (key, children), = node.items()  # fmt: skip
        if not isinstance(children, list):
            raise RuleError(join(key), "must be a list of rules")
        for index, child in enumerate(children):
            _validate(child, join(f"{key}.{index}"), depth + 1, count)
        return
    count[0] += 1
    if count[0] > MAX_CONDITIONS:
        raise RuleError(path, f"more than {MAX_CONDITIONS} conditions")
    unknown = set(node) - {"field", "op", "value"}
    if unknown:
        raise RuleError(join(sorted(unknown)[0]), "unknown key (a condition has field, op and value)")
    field, op = node.get("field"), node.get("op")
    if not isinstance(field, str) or not field:
        raise RuleError(join("field"), "is required")
    if op not in OPERATORS and not (field in REGISTRY and op in REGISTRY[field].operators):
        raise RuleError(join("op"), f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}")
    _resolve(field, op, node.get("value"), path)


def _resolve(field: str, op: str, value, path: str):
    """(kind, normalized value) for a condition, or RuleError."""
    value_path = f"{path}.value" if path else "value"
    field_path = f"{path}.field" if path else "field"
    if field in REGISTRY:
        if op not in REGISTRY[field].operators:
            raise RuleError(f"{path}.op" if path else "op", f"{field} accepts {', '.join(REGISTRY[field].operators)}")
        return "registered", value
    if field in TEXT_FIELDS:
        return "text", _check_value("text", op, value, value_path)
    if field in DATE_FIELDS:
        if op in ("contains", "starts_with"):
            raise RuleError(f"{path}.op" if path else "op", f"'{op}' does not apply to a date")
        return "date", _check_value("date", op, value, value_path)
    if field.startswith("attributes."):
        key = field.removeprefix("attributes.")
        if not key or len(key) > 100 or "__" in key:
            raise RuleError(field_path, "name an attribute: attributes.<key> (no double underscores)")
        return "attribute", _check_value("attribute", op, value, value_path)
    if field == "list":
        if op not in ("in", "not_in", "equals", "not_equals"):
            raise RuleError(f"{path}.op" if path else "op", "list accepts equals, not_equals, in, not_in")
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise RuleError(value_path, "must be a list id (or ids)")
        return "list", values
    if field.startswith("consent."):
        channel = field.removeprefix("consent.")
        if channel not in Channel.values:
            raise RuleError(field_path, f"unknown channel {channel!r}; use one of {', '.join(Channel.values)}")
        if op not in ("equals", "not_equals"):
            raise RuleError(f"{path}.op" if path else "op", "consent accepts equals, not_equals")
        if value not in ConsentStatus.values:
            raise RuleError(value_path, f"must be one of {', '.join(ConsentStatus.values)}")
        return "consent", value
    raise RuleError(field_path, f"unknown field {field!r}")


# -- compiling to Q --------------------------------------------------------------------------------------
def compile_rules(rules, now: dt.datetime | None = None) -> Q:
    """A ``Q`` on Contact selecting exactly the contacts ``rules`` accept. Empty rules accept all."""
    validate(rules)
    return _compile(rules, "", now or timezone.now())


def _compile(node: dict, path: str, now: dt.datetime) -> Q:
    if "and" in node or "or" in node:
        key = "and" if "and" in node else "or"
        parts = [_compile(child, f"{path}.{key}.{i}".lstrip("."), now) for i, child in enumerate(node[key])]
        if not parts:  # like all([]) and any([]): an empty AND is everyone, an empty OR nobody
            return Q(pk__isnull=False) if key == "and" else Q(pk__in=[])
        result = parts[0]
        for part in parts[1:]:
            result = (result & part) if key == "and" else (result | part)
        return result
    field, op = node["field"], node["op"]
    kind, value = _resolve(field, op, node.get("value"), path)
    if kind == "registered":
        return REGISTRY[field].compile(op, value, path)
    if op in NEGATED:
        return ~_positive(kind, field, NEGATED[op], value, now)
    return _positive(kind, field, op, value, now)


def _positive(kind: str, field: str, op: str, value, now: dt.datetime) -> Q:
    if kind == "list":
        return Q(Exists(ListMembership.objects.filter(contact=OuterRef("pk"), contact_list_id__in=value)))
    if kind == "consent":
        # The contact's copy of its consent row (kept by triggers): one column, no join per contact.
        return Q(**{consent_column(field.split(".", 1)[1]): value})
    if kind == "attribute":
        return _attribute(field.split(".", 1)[1], op, value, now)
    # Text and date fields: blank text counts as "not set", like a missing attribute.
    column = F(field)
    is_set = Q(**{f"{field}__isnull": False}) & (~Q(**{field: ""}) if kind == "text" else Q())
    if op == "is_set":
        return is_set
    if kind == "text" and op in ("equals", "in") and "" not in ([value] if op == "equals" else value):
        if not Contact._meta.get_field(field).null:  # never NULL, so NOT (country = 'DE') is never NULL
            return _compare(column, op, value, now, text=True)  # equal to a non-blank text: set already
    return is_set & _compare(column, op, value, now, text=kind == "text")


def _compare(expr, op: str, value, now: dt.datetime, text: bool = False) -> Q:
    if op == "equals":
        return Q(Exact(expr, value))
    if op == "in":
        result = Q(Exact(expr, value[0]))
        for item in value[1:]:
            result |= Q(Exact(expr, item))
        return result
    if op == "contains":
        return Q(IContains(expr, value))
    if op == "starts_with":
        return Q(IStartsWith(expr, value))
    if op in COMPARISONS:
        lookup = {"gt": GreaterThan, "gte": GreaterThanOrEqual, "lt": LessThan, "lte": LessThanOrEqual}[op]
        return Q(lookup(expr, value))
    if op == "between":
        return Q(GreaterThanOrEqual(expr, value[0])) & Q(LessThanOrEqual(expr, value[1]))
    if op == "within_last_days":
        return Q(GreaterThanOrEqual(expr, now - dt.timedelta(days=value)))
    if op == "more_than_days_ago":
        return Q(LessThan(expr, now - dt.timedelta(days=value)))
    raise RuleError("", f"unsupported operator {op!r}")


def _attribute(key: str, op: str, value, now: dt.datetime) -> Q:
    """Conditions on ``attributes.<key>``, typed: numbers compare as numbers, texts as texts.

    A value of the wrong JSON type never matches a comparison (a text is not "greater than 5").
    On PostgreSQL, equality with a text compares the extracted text (``->>``): the cheapest test a
    row can get, which PostgreSQL runs after the contact's plain columns. JSON containment (``@>``)
    would let the GIN index find the rows, but every row the index finds is tested again with
    ``@>`` — for a common value (a quarter of the contacts) that costs more than reading the table.
    Other values (numbers, booleans) keep containment: it compares 5 and 5.0 as equal numbers.
    """
    has_key = Q(attributes__has_key=key) & ~Q(**{f"attributes__{key}": None})
    if op == "is_set":
        return has_key & ~Q(**{f"attributes__{key}": ""})
    if op in ("equals", "in"):
        values = [value] if op == "equals" else value
        if connection.vendor == "postgresql":
            texts = [item for item in values if isinstance(item, str)]
            # COALESCE: a missing key or a JSON null gives NULL, which NOT would keep NULL (dropping the
            # contact from "not equals"); containment said false there, and so must this.
            result = Q(Coalesce(In(KT(f"attributes__{key}"), texts), False)) if texts else Q(pk__in=[])
            if any(_renders_like_other_json(item) for item in texts):
                result &= _is_text(key)  # "5" must not match the number 5, whose text is also '5'
            for item in values:
                if not isinstance(item, str):
                    result |= Q(attributes__contains={key: item})
            return result
        result = Q(**{f"attributes__{key}": values[0]})
        for item in values[1:]:
            result |= Q(**{f"attributes__{key}": item})
        return result
    if op in ("contains", "starts_with"):
        return has_key & _is_text(key) & _compare(KT(f"attributes__{key}"), op, str(value), now)
    if op in ("within_last_days", "more_than_days_ago"):
        cutoff = (now - dt.timedelta(days=value)).isoformat()
        lookup = "gte" if op == "within_last_days" else "lt"
        return has_key & _is_text(key) & _compare(KT(f"attributes__{key}"), lookup, cutoff, now)
    # gt/gte/lt/lte/between: numbers against numbers, texts against texts (JSON comparison of the
    # extracted value; the type guard keeps a text from ever comparing with a number).
    sample = value[0] if op == "between" else value
    guard = _is_text(key) if isinstance(sample, str) else _is_number(key)
    if op == "between":
        compared = Q(**{f"attributes__{key}__gte": value[0]}) & Q(**{f"attributes__{key}__lte": value[1]})
    else:
        compared = Q(**{f"attributes__{key}__{op}": value})
    return has_key & guard & compared


def _renders_like_other_json(text: str) -> bool:
    """Whether ``->>`` could give ``text`` for a JSON value that is not a string (number, boolean,
    object or array); a JSON null gives SQL NULL, never text."""
    if text in ("true", "false") or text[:1] in ("{", "["):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _json_type(key: str):
    from django.db.models import CharField, Func

    function = "jsonb_typeof" if connection.vendor == "postgresql" else "json_type"
    if connection.vendor == "postgresql":
        return Func(KeyTransform(key, "attributes"), function=function, output_field=CharField())
    return Func(F("attributes"), _sqlite_path(key), function=function, output_field=CharField())


def _sqlite_path(key: str):
    from django.db.models import Value

    return Value("$." + '"' + key.replace('"', '\\"') + '"')


def _is_text(key: str) -> Q:
    return Q(Exact(_json_type(key), "string" if connection.vendor == "postgresql" else "text"))


def _is_number(key: str) -> Q:
    if connection.vendor == "postgresql":
        return Q(Exact(_json_type(key), "number"))
    return Q(Exact(_json_type(key), "integer")) | Q(Exact(_json_type(key), "real"))


# -- the same semantics in plain Python (for the property test and for previews of one contact) -------------
def evaluate(rules, contact: dict, now: dt.datetime) -> bool:
    """Whether a contact, given as plain data, matches. ``contact`` holds the fields, ``attributes``,
    ``lists`` (set of ids) and ``consents`` ({channel: status})."""
    validate(rules)
    return _evaluate(rules, contact, now)


def _evaluate(node: dict, contact: dict, now: dt.datetime) -> bool:
    if "and" in node:
        return all(_evaluate(child, contact, now) for child in node["and"])
    if "or" in node:
        return any(_evaluate(child, contact, now) for child in node["or"])
    field, op = node["field"], node["op"]
    kind, value = _resolve(field, op, node.get("value"), "")
    if op in NEGATED:
        return not _evaluate_positive(kind, field, NEGATED[op], value, contact, now)
    return _evaluate_positive(kind, field, op, value, contact, now)


def _evaluate_positive(kind, field, op, value, contact, now) -> bool:
    if kind == "list":
        return bool(set(value) & set(contact.get("lists", ())))
    if kind == "consent":
        return contact.get("consents", {}).get(field.split(".", 1)[1]) == value
    if kind == "attribute":
        attributes = contact.get("attributes", {})
        key = field.split(".", 1)[1]
        if key not in attributes or attributes[key] is None:
            return False
        actual = attributes[key]
        if op == "is_set":
            return actual != ""
        if op in ("equals", "in"):
            values = [value] if op == "equals" else value
            return any(_json_equal(actual, v) for v in values)
        if op in ("contains", "starts_with"):
            return isinstance(actual, str) and _text_op(op, actual, str(value))
        if op in ("within_last_days", "more_than_days_ago"):
            if not isinstance(actual, str):
                return False
            cutoff = (now - dt.timedelta(days=value)).isoformat()
            return actual >= cutoff if op == "within_last_days" else actual < cutoff
        sample = value[0] if op == "between" else value
        if isinstance(sample, str):
            return isinstance(actual, str) and _ordered(op, actual, value)
        return _is_num(actual) and _ordered(op, float(actual), value)
    actual = contact.get(field)
    if actual is None or actual == "":
        return False
    if op == "is_set":
        return True
    if kind == "date":
        if op == "within_last_days":
            return actual >= now - dt.timedelta(days=value)
        if op == "more_than_days_ago":
            return actual < now - dt.timedelta(days=value)
    if op == "equals":
        return actual == value
    if op == "in":
        return actual in value
    if op in ("contains", "starts_with"):
        return _text_op(op, actual, value)
    return _ordered(op, actual, value)


def _is_num(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_equal(actual, expected) -> bool:
    if _is_num(actual) and _is_num(expected):
        return actual == expected
    return type(actual) is type(expected) and actual == expected


def _text_op(op: str, actual: str, value: str) -> bool:
    actual, value = actual.lower(), value.lower()
    return value in actual if op == "contains" else actual.startswith(value)


def _ordered(op: str, actual, value) -> bool:
    if op == "between":
        return value[0] <= actual <= value[1]
    return {"gt": actual > value, "gte": actual >= value, "lt": actual < value, "lte": actual <= value}[op]
