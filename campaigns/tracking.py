"""Tracked links and the open pixel: the hub's own signed redirect and 1x1 GIF, recorded as events.

``{{ track("https://shop.example/spring") }}`` in a template renders ``{PUBLIC_BASE_URL}/c/<token>/``;
a marketing email's HTML gets ``<img src="{PUBLIC_BASE_URL}/o/<token>.gif">``. Each token is
signed with its own salt (an unsubscribe token is no click token) and carries everything the view
needs — the message id, and for a link the target URL itself — so rendering writes no row and reads
nothing. A click or an open is stored append-only as a ``ProviderEvent`` of provider "hub", in the
same vocabulary as SendGrid's opens and clicks, and announced as ``delivery_events``.

The views trust only a valid signature: a forged or tampered link answers 404 and never redirects
(no open redirect); the pixel answers its GIF whatever the token, so a mail client shows nothing odd.
"""

import logging
import uuid
import zlib

from django.conf import settings
from django.core import signing
from django.http import HttpResponse, HttpResponseRedirect
from django.utils import timezone
from django.views.decorators.http import require_safe

from channels.events import DeliveryEvent, EventType, delivery_events
from channels.models import ProviderEvent

from .models import Message
from .templating import TemplateError, trackable_url
from .tokens import signer

log = logging.getLogger(__name__)
CLICK_SALT = "campaigns.click"
OPEN_SALT = "campaigns.open"
PROVIDER = "hub"  # ProviderEvent.provider of the events the hub observes itself
# The classic transparent 1x1 GIF (43 bytes).
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_NOT_VALID = """<!doctype html><html><head><meta charset="utf-8"><title>Link not valid</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto"><p>This link is not valid.</p></body></html>"""


def click_token(message_id: int, url: str) -> str:
    return signer(CLICK_SALT).sign_object([message_id, url])


def open_token(message_id: int) -> str:
    return signer(OPEN_SALT).sign(str(message_id))


class Tracker:
    """``track`` in a message's templates: the hub's redirect URL for this message and a target.

    Only what a template calls it with is reachable: the message id is a private slot, which the
    sandbox does not let a template read."""

    __slots__ = ("_message_id",)

    def __init__(self, message_id: int):
        self._message_id = message_id

    def __call__(self, url) -> str:
        target = trackable_url(url)
        return f"{settings.PUBLIC_BASE_URL}/c/{click_token(self._message_id, target)}/"


def with_open_pixel(body_html: str, message_id: int) -> str:
    """``body_html`` with the open pixel as the last thing in its body."""
    pixel = (
        f'<img src="{settings.PUBLIC_BASE_URL}/o/{open_token(message_id)}.gif" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    end = body_html.rfind("</body>")  # the brand layout's; any case in a hand-written one
    if end < 0:
        end = body_html.lower().rfind("</body>")
    return body_html + pixel if end < 0 else body_html[:end] + pixel + body_html[end:]


# -- the views ----------------------------------------------------------------------------------------
def _click_target(token: str) -> tuple[int, str] | None:
    """(message id, target) of a click token we signed, else None."""
    try:
        message_id, url = signing.Signer(salt=CLICK_SALT).unsign_object(token)
        if type(message_id) is not int or not isinstance(url, str):
            return None
        return message_id, trackable_url(url)  # signed by us, so already checked: checked again all the same
    except (signing.BadSignature, TemplateError, ValueError, TypeError, zlib.error):
        return None


def _open_message(token: str) -> int | None:
    try:
        value = signing.Signer(salt=OPEN_SALT).unsign(token)
    except signing.BadSignature:
        return None
    return int(value) if value.isdigit() else None


def record(message_id: int, event_type: EventType, url: str = "") -> ProviderEvent | None:
    """One append-only event for the message; nothing for a message (or contact) deleted or erased
    meanwhile: there is no one left to attribute it to."""
    row = (
        Message.objects.filter(pk=message_id, contact__erased_at__isnull=True)
        .values("channel", "account_id", "brand_id", "provider_message_id", "address")
        .first()
    )
    if row is None or row["account_id"] is None:
        return None
    now = timezone.now()
    event = ProviderEvent.objects.create(
        provider=PROVIDER, event_type=event_type, channel=row["channel"], account_id=row["account_id"],
        brand_id=row["brand_id"], message_id=str(message_id), provider_message_id=row["provider_message_id"],
        url=url[:500], address=row["address"], occurred_at=now,
        provider_event_id=f"{event_type}:{uuid.uuid4()}",
    )  # fmt: skip
    announced = DeliveryEvent(
        event_type=event_type, provider=PROVIDER, channel=event.channel, provider_event_id=event.provider_event_id,
        provider_message_id=event.provider_message_id or None, message_id=event.message_id, address=event.address,
        timestamp=now, url=url or None, account_id=event.account_id, brand_id=event.brand_id,
    )  # fmt: skip
    # Robustly: a failing receiver must not keep the reader from the link they clicked.
    for receiver, result in delivery_events.send_robust(sender=PROVIDER, events=[announced]):
        if isinstance(result, Exception):
            log.error("delivery_events receiver %r failed on a %s", receiver, event_type, exc_info=result)
    return event


@require_safe
def click_view(request, token: str):
    """302 to the signed target, one "clicked" event per GET (a HEAD, a link checker's, records none)."""
    found = _click_target(token)
    if found is None:
        return HttpResponse(_NOT_VALID, status=404)
    message_id, url = found
    if request.method == "GET":
        record(message_id, EventType.CLICKED, url)
    response = HttpResponseRedirect(url)
    response["Cache-Control"] = "no-store"  # every click comes back here
    return response


@require_safe
def open_view(request, token: str):
    """The transparent GIF, never cached, for any token; an "opened" event for each GET of a valid one."""
    message_id = _open_message(token)
    if message_id is not None and request.method == "GET":
        record(message_id, EventType.OPENED)
    response = HttpResponse(PIXEL_GIF, content_type="image/gif")
    response["Cache-Control"] = "no-cache, no-store, must-revalidate, max-age=0"
    response["Pragma"] = "no-cache"
    response["Expires"] = "0"
    return response
