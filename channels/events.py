"""One event vocabulary for every provider, and the signal that carries it to higher apps.

``channels`` normalizes provider callbacks into ``DeliveryEvent`` and sends ``delivery_events``;
``campaigns`` and ``analytics`` receive it. Nothing here imports a higher layer.
"""

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum

from django.dispatch import Signal


class EventType(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    FAILED = "failed"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    INBOUND = "inbound"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DeliveryEvent:
    event_type: EventType
    provider: str
    channel: str  # sms, whatsapp, email, telegram, webhook
    provider_event_id: str  # what makes a repeated callback recognisable
    provider_message_id: str | None = None
    message_id: str | None = None  # ours, when the provider echoes it (SendGrid custom args)
    address: str | None = None  # recipient (or sender, for inbound)
    timestamp: dt.datetime | None = None
    code: str | None = None  # provider's error code, if any
    description: str = ""
    url: str | None = None  # clicked link
    account_id: int | None = None
    brand_id: int | None = None
    raw: dict = field(default_factory=dict)


# sender: the provider name; kwargs: events=list[DeliveryEvent], the new events of one request in the
# order the provider sent them (a SendGrid request carries up to a thousand): receivers apply them as a set.
delivery_events = Signal()
