"""Delivery events from channels move messages forward; a callback also settles 'unknown' messages.

Statuses only move forward (sent → delivered/read; a bounce or failure after that is recorded as
failed), so a repeated or late event cannot undo a later one.
"""

from django.db import connection
from django.db.models import Case, F, Q, Value, When
from django.dispatch import receiver
from django.utils import timezone

from audiences.services import contact_erased, contact_export_requested
from channels.events import EventType, delivery_events

from .models import Message, MessageStatus

S = MessageStatus
_FORWARD = {
    EventType.SENT: S.SENT,
    EventType.DELIVERED: S.DELIVERED,
    EventType.READ: S.DELIVERED,
    EventType.FAILED: S.FAILED,
    EventType.BOUNCED: S.FAILED,
}
_RANK = {S.SENT: 1, S.DELIVERED: 2, S.FAILED: 3}
# Where a status may be reached from: forward only, each including the one before it.
_BEFORE = {
    S.SENT: (S.QUEUED, S.SENDING, S.UNKNOWN),
    S.DELIVERED: (S.QUEUED, S.SENDING, S.SENT, S.UNKNOWN),
    S.FAILED: (S.QUEUED, S.SENDING, S.SENT, S.UNKNOWN, S.DELIVERED),
}


def _our_id(event) -> int | None:
    """Our message id, when the provider echoed it back (SendGrid custom args, Twilio callback URL)."""
    return int(event.message_id) if event.message_id and event.message_id.isdigit() else None


def _messages(event):
    if _our_id(event) is not None:
        return Message.objects.filter(pk=_our_id(event), brand_id=event.brand_id)
    if event.provider_message_id:
        return Message.objects.filter(provider_message_id=event.provider_message_id, brand_id=event.brand_id)
    return Message.objects.none()


def _changes(status: str, event, now) -> dict:
    changes = {"status": status, "updated_at": now}
    if status == S.DELIVERED:
        changes["delivered_at"] = event.timestamp or now
    if status == S.FAILED:
        changes["error_code"] = (event.code or event.event_type)[:40]
        changes["error_message"] = (event.description or event.event_type)[:500]
    return changes


def _apply_one(status: str, event, now) -> None:
    changes = _changes(status, event, now)
    if event.provider_message_id:
        # A worker that died mid-call never stored the provider's id: the callback brings it.
        changes["provider_message_id"] = Case(
            When(provider_message_id="", then=Value(event.provider_message_id[:100])), default=F("provider_message_id")
        )
    _messages(event).filter(status__in=_BEFORE[status]).update(**changes)


def _apply_many(status: str, events: list, now) -> None:
    """``_apply_one`` for each event in one ``UPDATE … FROM unnest(…)`` (PostgreSQL): the events of a
    SendGrid request (up to a thousand) cost one statement per target status, not one each."""
    by_sid = [e.provider_message_id for e in events if _our_id(e) is None and e.provider_message_id]
    pks_of: dict[str, list[int]] = {}
    if by_sid:
        found = Message.objects.filter(brand_id=events[0].brand_id, provider_message_id__in=by_sid)
        for sid, pk in found.values_list("provider_message_id", "pk"):
            pks_of.setdefault(sid, []).append(pk)
    by_id: dict[int, object] = {}  # message -> its first event, as one at a time
    for event in events:
        pk = _our_id(event)
        for message_pk in [pk] if pk is not None else pks_of.get(event.provider_message_id, []):
            by_id.setdefault(message_pk, event)
    if not by_id:
        return
    rows = []
    for pk, event in by_id.items():
        changes = _changes(status, event, now)
        rows.append((pk, event.brand_id, (event.provider_message_id or "")[:100], changes.get("delivered_at"),
                     changes.get("error_code", ""), changes.get("error_message", "")))  # fmt: skip
    delivered = ", delivered_at = e.delivered" if status == S.DELIVERED else ""
    failed = ", error_code = e.code, error_message = e.text" if status == S.FAILED else ""
    # Our own column names only; every value is a parameter.
    sql = (
        f"UPDATE {Message._meta.db_table} AS m SET status = %s, updated_at = %s{delivered}{failed}, "  # noqa: S608
        "provider_message_id = CASE WHEN m.provider_message_id = '' THEN e.sid ELSE m.provider_message_id END "
        "FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::timestamptz[], %s::text[], %s::text[]) "
        "AS e(id, brand, sid, delivered, code, text) "
        "WHERE m.id = e.id AND m.brand_id = e.brand AND m.status = ANY(%s::text[])"
    )
    with connection.cursor() as cursor:
        columns = [list(column) for column in zip(*rows, strict=True)]  # ids, brands, sids, delivered, codes, texts
        cursor.execute(sql, [status, now, *columns, list(_BEFORE[status])])


@receiver(delivery_events, dispatch_uid="campaigns.message_status")
def message_status(sender, events, **kwargs):
    """Move the events' messages forward.

    Per target status (sent, then delivered, then failed: the order statuses move forward in) one
    update of all its messages, the first event per message counting: the batch ends where applying
    the events one at a time would (test_a_batch_of_events_ends_where_one_at_a_time_would)."""
    now = timezone.now()
    by_status: dict[str, list] = {}
    reached: dict[tuple, int] = {}  # message -> highest target status among its events so far
    for event in events:
        status = _FORWARD.get(event.event_type)
        if status is None:
            continue
        key = (event.message_id, event.provider_message_id)
        rank = _RANK[status]
        # After an event of a later status, one at a time would find this one's status no longer
        # reachable (each status's sources include the previous one's): it changes nothing.
        if reached.get(key, 0) > rank:
            continue
        reached[key] = rank
        by_status.setdefault(status, []).append(event)
    for status in _RANK:
        group = by_status.get(status, [])
        if group and connection.vendor != "postgresql":
            for event in group:
                _apply_one(status, event, now)
        elif group:
            _apply_many(status, group, now)


# -- engagement conditions for segments ("opened any campaign in the last 90 days") -----------------------
def _engagement(event_types: tuple[str, ...]):
    def compile_condition(op: str, value, path: str):
        import datetime as dt

        from django.db.models import CharField, Exists, OuterRef
        from django.db.models.functions import Cast

        from audiences.segments import RuleError
        from channels.models import ProviderEvent

        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 3650:
            raise RuleError(f"{path}.value" if path else "value", "must be a whole number of days between 1 and 3650")
        since = timezone.now() - dt.timedelta(days=value)
        engaged = Exists(
            ProviderEvent.objects.filter(
                event_type__in=event_types,
                occurred_at__gte=since,
                message_id__in=Message.objects.filter(contact=OuterRef(OuterRef("pk")))
                .annotate(key=Cast("pk", CharField()))
                .values("key"),
            )
        )
        return Q(engaged) if op == "within_last_days" else ~Q(engaged)

    return compile_condition


def _sent(op: str, value, path: str):
    import datetime as dt

    from django.db.models import Exists, OuterRef

    from audiences.segments import RuleError

    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 3650:
        raise RuleError(f"{path}.value" if path else "value", "must be a whole number of days between 1 and 3650")
    recent = Exists(
        Message.objects.filter(
            contact=OuterRef("pk"), sent_at__gte=timezone.now() - dt.timedelta(days=value), marketing=True
        )
    )
    return Q(recent) if op == "within_last_days" else ~Q(recent)


def register_engagement_conditions() -> None:
    from audiences.segments import register

    ops = ("within_last_days", "not_within_last_days")
    register("engagement.opened", ops, _engagement(("opened", "clicked")), "opened any message")
    register("engagement.clicked", ops, _engagement(("clicked",)), "clicked any message")
    register("engagement.sent", ops, _sent, "was sent a marketing message")


# -- GDPR: a contact's messages and provider events belong to their export, and go with their erasure ---------
def _contact_events(contact):
    from channels.models import ProviderEvent

    message_ids = [str(pk) for pk in contact.messages.values_list("pk", flat=True)]
    addresses = [a for a in {contact.email, contact.phone, contact.whatsapp, contact.telegram_chat_id} if a]
    return ProviderEvent.objects.filter(brand_id=contact.brand_id).filter(
        Q(message_id__in=message_ids) | Q(address__in=addresses)
    )


@receiver(contact_export_requested, dispatch_uid="campaigns.gdpr_export")
def export_messages(sender, contact, **kwargs):
    def iso(moment):
        return moment.isoformat() if moment else None

    messages = [
        {"id": m.pk, "campaign": m.campaign.name if m.campaign else None, "channel": m.channel, "status": m.status,
         "skip_reason": m.skip_reason, "address": m.address, "error_code": m.error_code,
         "created_at": iso(m.created_at), "sent_at": iso(m.sent_at), "delivered_at": iso(m.delivered_at)}
        for m in contact.messages.select_related("campaign").order_by("id")
    ]  # fmt: skip
    events = [
        {"type": e.event_type, "channel": e.channel, "provider": e.provider, "message_id": e.message_id or None,
         "address": e.address, "url": e.url, "occurred_at": iso(e.occurred_at)}
        for e in _contact_events(contact).order_by("occurred_at", "id")
    ]  # fmt: skip
    return {"messages": messages, "events": events}


@receiver(contact_erased, dispatch_uid="campaigns.gdpr_erase")
def erase_messages(sender, contact, **kwargs):
    """Keep the rows (statuses and costs still add up), drop what identifies the person."""
    from urllib.parse import quote_plus

    from channels.models import WebhookLog

    addresses = [a for a in {contact.email, contact.phone, contact.whatsapp, contact.telegram_chat_id} if a]
    _contact_events(contact).update(address="", url="")
    contact.messages.update(address="", context={})
    # The raw webhook log holds addresses in request bodies (form-encoded or JSON): those lines go too.
    logged = Q()
    for address in addresses:
        logged |= Q(body__contains=address) | Q(body__contains=quote_plus(address))
    if logged:
        WebhookLog.objects.filter(brand_id=contact.brand_id).filter(logged).update(body="[erased]", headers={})
