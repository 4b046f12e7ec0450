"""Delivery events from channels move messages forward; a callback also settles 'unknown' messages.

Statuses only move forward (sent → delivered/read; a bounce or failure after that is recorded as
failed), so a repeated or late event cannot undo a later one.
"""

from django.db.models import Case, F, Q, Value, When
from django.dispatch import receiver
from django.utils import timezone

from audiences.services import contact_erased, contact_export_requested
from channels.events import EventType, delivery_event

from .models import Message, MessageStatus

S = MessageStatus
_FORWARD = {
    EventType.SENT: (S.SENT, (S.QUEUED, S.SENDING, S.UNKNOWN)),
    EventType.DELIVERED: (S.DELIVERED, (S.QUEUED, S.SENDING, S.SENT, S.UNKNOWN)),
    EventType.READ: (S.DELIVERED, (S.QUEUED, S.SENDING, S.SENT, S.UNKNOWN)),
    EventType.FAILED: (S.FAILED, (S.QUEUED, S.SENDING, S.SENT, S.UNKNOWN, S.DELIVERED)),
    EventType.BOUNCED: (S.FAILED, (S.QUEUED, S.SENDING, S.SENT, S.UNKNOWN, S.DELIVERED)),
}


def _messages(event):
    if event.message_id and event.message_id.isdigit():
        return Message.objects.filter(pk=int(event.message_id), brand_id=event.brand_id)
    if event.provider_message_id:
        return Message.objects.filter(provider_message_id=event.provider_message_id, brand_id=event.brand_id)
    return Message.objects.none()


@receiver(delivery_event, dispatch_uid="campaigns.message_status")
def message_status(sender, event, **kwargs):
    if event.event_type not in _FORWARD:
        return
    status, before = _FORWARD[event.event_type]
    now = timezone.now()
    changes = {"status": status, "updated_at": now}
    if status == S.DELIVERED:
        changes["delivered_at"] = event.timestamp or now
    if status == S.FAILED:
        changes["error_code"] = (event.code or event.event_type)[:40]
        changes["error_message"] = (event.description or event.event_type)[:500]
    if event.provider_message_id:
        # A worker that died mid-call never stored the provider's id: the callback brings it.
        changes["provider_message_id"] = Case(
            When(provider_message_id="", then=Value(event.provider_message_id[:100])), default=F("provider_message_id")
        )
    _messages(event).filter(status__in=before).update(**changes)


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
