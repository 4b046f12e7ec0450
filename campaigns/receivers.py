"""Delivery events from channels move messages forward; a callback also settles 'unknown' messages.

Statuses only move forward (sent → delivered/read; a bounce or failure after that is recorded as
failed), so a repeated or late event cannot undo a later one.
"""

from django.db.models import Case, F, Q, Value, When
from django.dispatch import receiver
from django.utils import timezone

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
