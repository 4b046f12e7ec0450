"""Inbound provider webhooks: verify, log, normalize into one event vocabulary, act, and tell higher apps.

Every request is logged (``WebhookLog``, credentials stripped). A forged or stale request answers
403 and is counted; it leaves no trace but the log. Events are idempotent on the provider's event
id (``ProviderEvent`` is unique on it), stored append-only, and sent as ``delivery_events`` signals
(campaigns updates its messages, analytics counts). Keywords act at once: STOP and friends
unsubscribe the sender on that channel, START/UNSTOP resubscribe; Telegram's ``/start <token>``
links a chat to a contact; a bot blocked by the user loses its Telegram consent.
"""

import datetime as dt
import hmac
import json
import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from audiences import services as audience_services
from audiences.models import ConsentStatus, SuppressionReason

from .events import DeliveryEvent, EventType, delivery_events
from .models import ChannelAccount, ProviderEvent, WebhookLog

log = logging.getLogger(__name__)
REPLAY_WINDOW = 600  # seconds a SendGrid signature timestamp may be old (the SDK checks none)
STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}
START_WORDS = {"START", "UNSTOP"}
_STRIPPED_HEADERS = {"authorization", "cookie", "proxy-authorization"}

TWILIO_STATUS = {
    "accepted": EventType.QUEUED, "queued": EventType.QUEUED, "scheduled": EventType.QUEUED,
    "sending": EventType.SENT, "sent": EventType.SENT, "delivered": EventType.DELIVERED, "read": EventType.READ,
    "undelivered": EventType.FAILED, "failed": EventType.FAILED, "canceled": EventType.FAILED,
}  # fmt: skip
SENDGRID_EVENT = {
    "processed": EventType.QUEUED, "deferred": EventType.QUEUED, "delivered": EventType.DELIVERED,
    "open": EventType.OPENED, "click": EventType.CLICKED, "bounce": EventType.BOUNCED, "dropped": EventType.FAILED,
    "spamreport": EventType.COMPLAINED, "unsubscribe": EventType.UNSUBSCRIBED,
    "group_unsubscribe": EventType.UNSUBSCRIBED,
}  # fmt: skip


class Rejected(Exception):
    def __init__(self, verdict: str, detail: str, status: int = 403):
        super().__init__(detail)
        self.verdict, self.detail, self.status = verdict, detail, status


def rejection_count(provider: str, verdict: str) -> int:
    return int(cache.get(f"hub:webhooks:rejected:{provider}:{verdict}") or 0)


def _count_rejection(provider: str, verdict: str) -> None:
    key = f"hub:webhooks:rejected:{provider}:{verdict}"
    if not cache.add(key, 1, timeout=None):
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, 1, timeout=None)


def _headers(request) -> dict:
    return {k: v for k, v in request.headers.items() if k.lower() not in _STRIPPED_HEADERS}


def _handle(request, provider: str, kind: str, account_id: int, providers: tuple, process):
    """Shared shape of every endpoint: find the account, run ``process``, log, answer.

    An accepted request is one transaction (its events, what they change, its log line): one commit,
    so one WAL flush, per callback, and a crash leaves either all of it or none (the provider retries).
    """
    body = request.body.decode("utf-8", errors="replace")
    entry = WebhookLog(provider=provider, kind=kind, path=request.get_full_path()[:300], headers=_headers(request),
                       body=body[:100_000])  # fmt: skip
    account = ChannelAccount.objects.select_related("brand").filter(pk=account_id, provider__in=providers).first()
    try:
        if account is None:
            raise Rejected(WebhookLog.Verdict.UNKNOWN_ACCOUNT, "no such account for this provider", 404)
        entry.account, entry.brand = account, account.brand
        with transaction.atomic():
            events, verdict, answer = process(request, account, body)
            entry.verdict, entry.events = verdict, events
            entry.save()
        return answer or HttpResponse(status=200)
    except Rejected as exc:
        entry.verdict, entry.detail = exc.verdict, exc.detail[:300]
        entry.save()
        if exc.verdict in (WebhookLog.Verdict.FORGED, WebhookLog.Verdict.STALE):
            _count_rejection(provider, exc.verdict)
            log.warning("rejected %s %s webhook for account %s: %s", provider, kind, account_id, exc.verdict)
        return HttpResponse(exc.detail, status=exc.status, content_type="text/plain")


# -- recording events ---------------------------------------------------------------------------------------
_EVENT_COLUMNS = (
    "account_id", "brand_id", "provider", "channel", "event_type", "provider_event_id", "provider_message_id",
    "message_id", "address", "code", "description", "url", "occurred_at", "received_at",
)  # fmt: skip


def _insert_new(account: ChannelAccount, events: list[DeliveryEvent]) -> set[str]:
    """Insert the events, skipping ids already stored; returns the ids this call inserted.

    ``INSERT … ON CONFLICT DO NOTHING RETURNING`` (PostgreSQL and SQLite alike) decides in the
    database, so two deliveries of one event racing each other are acted on exactly once.
    """
    now = timezone.now()
    rows, seen = [], set()
    for e in events:
        event_id = e.provider_event_id[:120]
        if event_id in seen:
            continue
        seen.add(event_id)
        rows.append((
            account.pk, account.brand_id, account.provider, account.channel, e.event_type, event_id,
            (e.provider_message_id or "")[:120], (e.message_id or "")[:40], (e.address or "")[:254],
            (e.code or "")[:40], e.description[:300], (e.url or "")[:500], e.timestamp or now, now,
        ))  # fmt: skip
    table = connection.ops.quote_name(ProviderEvent._meta.db_table)
    row_sql = "(" + ", ".join(["%s"] * len(_EVENT_COLUMNS)) + ")"
    inserted: set[str] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            # Only our own constant names and placeholders are formatted in; the values are parameters.
            sql = (
                f"INSERT INTO {table} ({', '.join(_EVENT_COLUMNS)}) VALUES {', '.join([row_sql] * len(chunk))} "  # noqa: S608
                "ON CONFLICT (provider, provider_event_id) DO NOTHING RETURNING provider_event_id"
            )
            cursor.execute(sql, [value for row in chunk for value in row])
            inserted.update(row[0] for row in cursor.fetchall())
    return inserted


def record(account: ChannelAccount, events: list[DeliveryEvent]) -> list[DeliveryEvent]:
    """Store the events not seen before and announce them; returns the new ones."""
    if not events:
        return []
    with transaction.atomic(savepoint=False):  # inside the request's transaction: no savepoint round trips
        inserted = _insert_new(account, events)
        fresh = []
        for event in events:
            if event.provider_event_id[:120] in inserted:
                inserted.discard(event.provider_event_id[:120])
                fresh.append(event)
        for event in fresh:
            _act(account, event)
        delivery_events.send(sender=account.provider, events=fresh)
    return fresh


def _act(account: ChannelAccount, event: DeliveryEvent) -> None:
    """What an event means for the audience: bounces and complaints suppress, unsubscribes unsubscribe."""
    brand, channel, address = account.brand, account.channel, event.address
    if not address:
        return
    source = f"{account.provider}:{event.event_type}"
    if event.event_type == EventType.BOUNCED:
        audience_services.suppression_add(brand, channel, address, SuppressionReason.HARD_BOUNCE, source)
    elif event.event_type == EventType.COMPLAINED:
        audience_services.suppression_add(brand, channel, address, SuppressionReason.COMPLAINT, source)
        audience_services.consent_set_by_address(
            brand, channel, address, ConsentStatus.UNSUBSCRIBED, source, "provider"
        )
    elif event.event_type == EventType.UNSUBSCRIBED:
        audience_services.consent_set_by_address(
            brand, channel, address, ConsentStatus.UNSUBSCRIBED, source, "provider"
        )


# -- Twilio --------------------------------------------------------------------------------------------------
def _verify_twilio(request, account: ChannelAccount) -> None:
    token = account.credentials.get("auth_token", "")
    url = settings.PUBLIC_BASE_URL + request.get_full_path()
    signature = request.headers.get("X-Twilio-Signature", "")
    if not token or not signature or not RequestValidator(token).validate(url, request.POST, signature):
        raise Rejected(WebhookLog.Verdict.FORGED, "signature does not match")


def _twilio_status(request, account, body):
    _verify_twilio(request, account)
    form = request.POST
    sid, status = form.get("MessageSid", ""), form.get("MessageStatus", "")
    if not sid or status not in TWILIO_STATUS:
        raise Rejected(WebhookLog.Verdict.MALFORMED, "MessageSid and a known MessageStatus are required", 400)
    event = DeliveryEvent(
        event_type=TWILIO_STATUS[status], provider=account.provider, channel=account.channel,
        provider_event_id=f"{sid}:{status}", provider_message_id=sid, message_id=request.GET.get("m") or None,
        address=form.get("To", "").removeprefix("whatsapp:"), timestamp=timezone.now(),
        code=form.get("ErrorCode") or None, description=status, account_id=account.pk, brand_id=account.brand_id,
        raw=dict(form.items()),
    )  # fmt: skip
    fresh = record(account, [event])
    return len(fresh), WebhookLog.Verdict.ACCEPTED if fresh else WebhookLog.Verdict.DUPLICATE, None


def _twilio_inbound(request, account, body):
    _verify_twilio(request, account)
    form = request.POST
    sid, sender = form.get("MessageSid", ""), form.get("From", "").removeprefix("whatsapp:")
    if not sid or not sender:
        raise Rejected(WebhookLog.Verdict.MALFORMED, "MessageSid and From are required", 400)
    word = form.get("Body", "").strip().upper()
    event = DeliveryEvent(
        event_type=EventType.INBOUND, provider=account.provider, channel=account.channel,
        provider_event_id=f"{sid}:inbound", provider_message_id=sid, address=sender, timestamp=timezone.now(),
        description=form.get("Body", "")[:300], account_id=account.pk, brand_id=account.brand_id,
    )  # fmt: skip
    fresh = record(account, [event])
    if fresh:
        keyword(account, sender, word)
    # An empty TwiML answer: Twilio itself replies to STOP/START on long codes (Advanced Opt-Out).
    answer = HttpResponse('<?xml version="1.0" encoding="UTF-8"?><Response/>', content_type="text/xml")
    return len(fresh), WebhookLog.Verdict.ACCEPTED if fresh else WebhookLog.Verdict.DUPLICATE, answer


def keyword(account: ChannelAccount, address: str, word: str) -> str | None:
    """STOP-like words unsubscribe ``address`` on the account's channel at once; START-like resubscribe."""
    brand, channel = account.brand, account.channel
    if word in STOP_WORDS:
        with transaction.atomic():
            audience_services.suppression_add(brand, channel, address, SuppressionReason.STOP, f"keyword {word}")
            audience_services.consent_set_by_address(
                brand, channel, address, ConsentStatus.UNSUBSCRIBED, f"keyword {word}", account.provider
            )
        return "stop"
    if word in START_WORDS:
        with transaction.atomic():
            audience_services.suppression_remove(brand, channel, address, reasons=(SuppressionReason.STOP,))
            audience_services.consent_set_by_address(
                brand, channel, address, ConsentStatus.SUBSCRIBED, f"keyword {word}", account.provider
            )
        return "start"
    return None


# -- SendGrid ------------------------------------------------------------------------------------------------
def _sendgrid_events(request, account, body):
    key = account.credentials.get("webhook_public_key", "")
    signature = request.headers.get("X-Twilio-Email-Event-Webhook-Signature", "")
    timestamp = request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "")
    if not key or not signature or not timestamp:
        raise Rejected(WebhookLog.Verdict.FORGED, "signature headers or the account's public key are missing")
    try:
        valid = EventWebhook(key).verify_signature(body, signature, timestamp)
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise Rejected(WebhookLog.Verdict.FORGED, "signature does not match")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > REPLAY_WINDOW:
        raise Rejected(WebhookLog.Verdict.STALE, f"timestamp outside the {REPLAY_WINDOW} s replay window")
    try:
        items = json.loads(body)
    except ValueError:
        raise Rejected(WebhookLog.Verdict.MALFORMED, "body is not JSON", 400) from None
    if not isinstance(items, list):
        raise Rejected(WebhookLog.Verdict.MALFORMED, "body must be a JSON array of events", 400)
    events = []
    for item in items:
        kind = SENDGRID_EVENT.get(item.get("event")) if isinstance(item, dict) else None
        if kind is None or not item.get("sg_event_id"):
            continue  # unknown kinds are logged (raw body) and ignored, never fatal
        events.append(
            DeliveryEvent(
                event_type=kind,
                provider=account.provider,
                channel=account.channel,
                provider_event_id=str(item["sg_event_id"]),
                provider_message_id=str(item.get("sg_message_id", "")),
                message_id=str(item.get("mh_message_id", "")) or None,
                address=str(item.get("email", "")).lower(),
                timestamp=dt.datetime.fromtimestamp(int(item.get("timestamp") or time.time()), dt.UTC),
                code=str(item.get("status", "") or "") or None,
                description=str(item.get("reason", ""))[:300],
                url=item.get("url"),
                account_id=account.pk,
                brand_id=account.brand_id,
                raw=item,
            )
        )
    fresh = record(account, events)
    verdict = WebhookLog.Verdict.ACCEPTED if fresh or not events else WebhookLog.Verdict.DUPLICATE
    return len(fresh), verdict, None


# -- Telegram ------------------------------------------------------------------------------------------------
def _telegram_update(request, account, body):
    secret = account.webhook_secret
    given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    if not secret or not hmac.compare_digest(secret, given):
        raise Rejected(WebhookLog.Verdict.FORGED, "secret token does not match")
    try:
        update = json.loads(body)
        update_id = int(update["update_id"])
    except (ValueError, KeyError, TypeError):
        raise Rejected(WebhookLog.Verdict.MALFORMED, "not a Telegram update", 400) from None
    message = update.get("message") or {}
    member = update.get("my_chat_member") or {}
    chat_id = str((message.get("chat") or member.get("chat") or {}).get("id", ""))
    event_type, text = EventType.INBOUND, (message.get("text") or "").strip()
    if member and (member.get("new_chat_member") or {}).get("status") == "kicked":
        event_type = EventType.UNSUBSCRIBED
    event = DeliveryEvent(
        event_type=event_type, provider=account.provider, channel=account.channel,
        provider_event_id=f"{account.pk}:{update_id}", address=chat_id or None, timestamp=timezone.now(),
        description=text[:300], account_id=account.pk, brand_id=account.brand_id,
    )  # fmt: skip
    fresh = record(account, [event])
    if fresh and chat_id:
        if text.startswith("/start"):
            token = text.removeprefix("/start").strip()
            contact = audience_services.contact_from_telegram_token(account.brand, token) if token else None
            if contact is not None:
                audience_services.contact_link_telegram(contact, chat_id, "telegram:/start")
        elif text.upper().lstrip("/") in STOP_WORDS:
            keyword(account, chat_id, text.upper().lstrip("/"))
    return len(fresh), WebhookLog.Verdict.ACCEPTED if fresh else WebhookLog.Verdict.DUPLICATE, None


# -- the endpoints -------------------------------------------------------------------------------------------
TWILIO = ("twilio_sms", "twilio_whatsapp")


@csrf_exempt
@require_POST
def twilio_status(request, account_id: int):
    return _handle(request, "twilio", "status", account_id, TWILIO, _twilio_status)


@csrf_exempt
@require_POST
def twilio_inbound(request, account_id: int):
    return _handle(request, "twilio", "inbound", account_id, TWILIO, _twilio_inbound)


@csrf_exempt
@require_POST
def sendgrid_events(request, account_id: int):
    return _handle(request, "sendgrid", "events", account_id, ("sendgrid",), _sendgrid_events)


@csrf_exempt
@require_POST
def telegram_update(request, account_id: int):
    return _handle(request, "telegram", "update", account_id, ("telegram",), _telegram_update)


def rejections(request):
    """Counts of rejected webhooks by provider and reason (for monitoring)."""
    data = {
        f"{provider}:{verdict}": rejection_count(provider, verdict)
        for provider in ("twilio", "sendgrid", "telegram")
        for verdict in (WebhookLog.Verdict.FORGED, WebhookLog.Verdict.STALE)
    }
    return JsonResponse(data)
