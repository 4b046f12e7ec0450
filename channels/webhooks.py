"""Inbound provider webhooks: verify, log, normalize into one event vocabulary, act, and tell higher apps.

Every request is logged (``WebhookLog``, credentials stripped). A forged or stale request answers
403 and is counted; it leaves no trace but the log. Events are idempotent on the provider's event
id (``ProviderEvent`` is unique on it), stored append-only, and sent as ``delivery_events`` signals
(campaigns updates its messages, analytics counts). Keywords act at once: STOP and friends
unsubscribe the sender on that channel, START/UNSTOP resubscribe; Telegram's ``/start <token>``
links a chat to a contact; a bot blocked by the user loses its Telegram consent.

The rules (``*_request``: verify a request and normalize it into events; ``record_batch``: store and
announce them) are shared by two front ends: the Django views below (one transaction per request;
``make run`` and any deployment that routes /webhooks/ to gunicorn) and ``channels.webhook_server``
(aiohttp, many requests per transaction: ``python manage.py serve_webhooks``).
"""

import datetime as dt
import hmac
import json
import logging
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

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


def unknown_account() -> Rejected:
    return Rejected(WebhookLog.Verdict.UNKNOWN_ACCOUNT, "no such account for this provider", 404)


@dataclass(frozen=True)
class Inbound:
    """A provider's request as either front end received it (the Django view or the fast path)."""

    full_path: str  # path and query string as requested: Twilio signs the public URL with them
    headers: Mapping[str, str]  # looked up case-insensitively
    body: str
    form: Mapping[str, str]  # the form fields, a MultiValueDict (QueryDict): Twilio signs every value of each
    query: Mapping[str, str]


class Keys:
    """An account's secrets, decrypted on first use (the fast path keeps them with its cached account)."""

    def __init__(self, account: ChannelAccount):
        self._account = account

    @cached_property
    def credentials(self) -> dict:
        return self._account.credentials

    @cached_property
    def webhook_secret(self) -> str:
        return self._account.webhook_secret


@dataclass
class Verified:
    """A request that passed verification, normalized: its events, what its fresh events do, its answer."""

    events: list[DeliveryEvent]
    after: Callable[[list[DeliveryEvent]], None] | None = None  # in the transaction, only when events are fresh
    answer: str = ""
    content_type: str | None = None

    def verdict(self, fresh: list[DeliveryEvent]) -> str:
        return WebhookLog.Verdict.ACCEPTED if fresh or not self.events else WebhookLog.Verdict.DUPLICATE


@dataclass(frozen=True)
class Endpoint:
    provider: str  # as logged and counted: twilio, sendgrid, telegram
    kind: str  # status, inbound, events, update
    providers: tuple[str, ...]  # the account providers it serves
    process: Callable[[Inbound, ChannelAccount, Keys], Verified]  # raises Rejected


def rejection_count(provider: str, verdict: str) -> int:
    return int(cache.get(f"hub:webhooks:rejected:{provider}:{verdict}") or 0)


def note_rejection(endpoint: Endpoint, account_id: int, exc: Rejected) -> None:
    """Forged and stale requests are counted (for monitoring) and logged as warnings."""
    if exc.verdict not in (WebhookLog.Verdict.FORGED, WebhookLog.Verdict.STALE):
        return
    key = f"hub:webhooks:rejected:{endpoint.provider}:{exc.verdict}"
    if not cache.add(key, 1, timeout=None):
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, 1, timeout=None)
    log.warning("rejected %s %s webhook for account %s: %s", endpoint.provider, endpoint.kind, account_id, exc.verdict)


def log_fields(endpoint: Endpoint, full_path: str, headers: Mapping[str, str], body: str) -> dict:
    """The ``WebhookLog`` line of a request as received, credentials stripped."""
    kept = {k: v for k, v in headers.items() if k.lower() not in _STRIPPED_HEADERS}
    return {"provider": endpoint.provider, "kind": endpoint.kind, "path": full_path[:300], "headers": kept,
            "body": body[:100_000]}  # fmt: skip


def _handle(request, endpoint: Endpoint, account_id: int):
    """The Django view of every endpoint: find the account, verify and normalize, record, log, answer.

    An accepted request is one transaction (its events, what they change, its log line): one commit,
    so one WAL flush, per callback, and a crash leaves either all of it or none (the provider retries).
    The fast path (``channels.webhook_server``) runs the same steps for many requests in one transaction.
    """
    body = request.body.decode("utf-8", errors="replace")
    full_path = request.get_full_path()
    entry = WebhookLog(**log_fields(endpoint, full_path, request.headers, body))
    account = (
        ChannelAccount.objects.select_related("brand").filter(pk=account_id, provider__in=endpoint.providers).first()
    )
    try:
        if account is None:
            raise unknown_account()
        entry.account, entry.brand = account, account.brand
        inbound = Inbound(full_path, request.headers, body, request.POST, request.GET)
        with transaction.atomic():
            verified = endpoint.process(inbound, account, Keys(account))
            fresh = record(account, verified.events)
            if fresh and verified.after:
                verified.after(fresh)
            entry.verdict, entry.events = verified.verdict(fresh), len(fresh)
            entry.save()
        return HttpResponse(verified.answer, content_type=verified.content_type)
    except Rejected as exc:
        entry.verdict, entry.detail = exc.verdict, exc.detail[:300]
        entry.save()
        note_rejection(endpoint, account_id, exc)
        return HttpResponse(exc.detail, status=exc.status, content_type="text/plain")


# -- recording events ---------------------------------------------------------------------------------------
_EVENT_COLUMNS = (
    "account_id", "brand_id", "provider", "channel", "event_type", "provider_event_id", "provider_message_id",
    "message_id", "address", "code", "description", "url", "occurred_at", "received_at",
)  # fmt: skip


def _insert_new(batch: list[tuple[ChannelAccount, list[DeliveryEvent]]], staged: bool) -> set[tuple[str, str]]:
    """Insert the events, skipping ids already stored; returns the (provider, id) pairs this call inserted.

    ``INSERT … ON CONFLICT DO NOTHING RETURNING`` (PostgreSQL and SQLite alike) decides in the
    database, so two deliveries of one event racing each other are acted on exactly once.
    """
    now = timezone.now()
    rows, seen = [], set()
    for account, events in batch:
        for e in events:
            key = (account.provider, e.provider_event_id[:120])
            if key in seen:
                continue
            seen.add(key)
            rows.append((
                account.pk, account.brand_id, account.provider, account.channel, e.event_type, key[1],
                (e.provider_message_id or "")[:120], (e.message_id or "")[:40], (e.address or "")[:254],
                (e.code or "")[:40], e.description[:300], (e.url or "")[:500], e.timestamp or now, now,
            ))  # fmt: skip
    table = connection.ops.quote_name(ProviderEvent._meta.db_table)
    if staged:
        return _insert_staged(table, rows)
    row_sql = "(" + ", ".join(["%s"] * len(_EVENT_COLUMNS)) + ")"
    inserted: set[tuple[str, str]] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            # Only our own constant names and placeholders are formatted in; the values are parameters.
            sql = (
                f"INSERT INTO {table} ({', '.join(_EVENT_COLUMNS)}) VALUES {', '.join([row_sql] * len(chunk))} "  # noqa: S608
                "ON CONFLICT (provider, provider_event_id) DO NOTHING RETURNING provider, provider_event_id"
            )
            cursor.execute(sql, [value for row in chunk for value in row])
            inserted.update(cursor.fetchall())
    return inserted


_staging: weakref.WeakSet = weakref.WeakSet()  # the connections that have the staging table


def _insert_staged(table: str, rows: list[tuple]) -> set[tuple[str, str]]:
    """``_insert_new`` for many rows on PostgreSQL: COPY them into a session-local staging table, then
    one ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING``. Parameters of a multi-row VALUES are
    quoted one by one in Python (psycopg's client-side binding, Django's default); COPY formats in C."""
    columns = ", ".join(_EVENT_COLUMNS)
    with connection.cursor() as cursor:
        if connection.connection not in _staging:
            # Emptied at each commit (and gone with a rollback): one use per transaction.
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS webhook_event_rows ON COMMIT DELETE ROWS AS SELECT {columns} "  # noqa: S608
                f"FROM {table} WITH NO DATA"
            )
            _staging.add(connection.connection)
        with cursor.cursor.copy(f"COPY webhook_event_rows ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM webhook_event_rows "  # noqa: S608
            "ON CONFLICT (provider, provider_event_id) DO NOTHING RETURNING provider, provider_event_id"
        )
        return set(cursor.fetchall())


def record_batch(
    batch: list[tuple[ChannelAccount, list[DeliveryEvent]]], *, staged: bool = False
) -> list[list[DeliveryEvent]]:
    """Store the events not seen before and announce them; returns each item's new ones.

    ``batch`` holds the events of one or more requests (an account with each); one INSERT stores them
    all, and each account's new events go out in one ``delivery_events`` signal, so ``campaigns``
    moves their messages in its batched path. Runs inside the caller's transaction. ``staged``
    (PostgreSQL, once per transaction) loads the events with COPY: the fast path's batches.
    """
    if not any(events for _, events in batch):
        return [[] for _ in batch]
    with transaction.atomic(savepoint=False):  # inside the request's transaction: no savepoint round trips
        inserted = _insert_new(batch, staged and connection.vendor == "postgresql")
        fresh_of, by_account = [], {}
        for account, events in batch:
            fresh = []
            for event in events:
                key = (account.provider, event.provider_event_id[:120])
                if key in inserted:
                    inserted.discard(key)
                    fresh.append(event)
            fresh_of.append(fresh)
            by_account.setdefault(account.pk, (account, []))[1].extend(fresh)
        for (account, _), fresh in zip(batch, fresh_of, strict=True):
            for event in fresh:
                _act(account, event)
        for account, fresh in by_account.values():
            if fresh:
                delivery_events.send(sender=account.provider, events=fresh)
    return fresh_of


def record(account: ChannelAccount, events: list[DeliveryEvent]) -> list[DeliveryEvent]:
    """Store the events not seen before and announce them; returns the new ones."""
    return record_batch([(account, events)])[0]


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
def _verify_twilio(inbound: Inbound, keys: Keys) -> None:
    token = keys.credentials.get("auth_token", "")
    url = settings.PUBLIC_BASE_URL + inbound.full_path
    signature = inbound.headers.get("X-Twilio-Signature", "")
    if not token or not signature:
        raise Rejected(WebhookLog.Verdict.FORGED, "signature does not match")
    validator = RequestValidator(token)
    # The URL as configured is one of the two forms validate() tries (with and without the port):
    # check it alone first, as validate() would compute both signatures every time.
    expected = validator.compute_signature(url, inbound.form)
    if not hmac.compare_digest(expected.encode(), signature.encode()) and not validator.validate(
        url, inbound.form, signature
    ):
        raise Rejected(WebhookLog.Verdict.FORGED, "signature does not match")


def twilio_status_request(inbound: Inbound, account: ChannelAccount, keys: Keys) -> Verified:
    _verify_twilio(inbound, keys)
    form = inbound.form
    sid, status = form.get("MessageSid", ""), form.get("MessageStatus", "")
    if not sid or status not in TWILIO_STATUS:
        raise Rejected(WebhookLog.Verdict.MALFORMED, "MessageSid and a known MessageStatus are required", 400)
    event = DeliveryEvent(
        event_type=TWILIO_STATUS[status], provider=account.provider, channel=account.channel,
        provider_event_id=f"{sid}:{status}", provider_message_id=sid, message_id=inbound.query.get("m") or None,
        address=form.get("To", "").removeprefix("whatsapp:"), timestamp=timezone.now(),
        code=form.get("ErrorCode") or None, description=status, account_id=account.pk, brand_id=account.brand_id,
        raw=dict(form.items()),
    )  # fmt: skip
    return Verified([event])


def twilio_inbound_request(inbound: Inbound, account: ChannelAccount, keys: Keys) -> Verified:
    _verify_twilio(inbound, keys)
    form = inbound.form
    sid, sender = form.get("MessageSid", ""), form.get("From", "").removeprefix("whatsapp:")
    if not sid or not sender:
        raise Rejected(WebhookLog.Verdict.MALFORMED, "MessageSid and From are required", 400)
    word = form.get("Body", "").strip().upper()
    event = DeliveryEvent(
        event_type=EventType.INBOUND, provider=account.provider, channel=account.channel,
        provider_event_id=f"{sid}:inbound", provider_message_id=sid, address=sender, timestamp=timezone.now(),
        description=form.get("Body", "")[:300], account_id=account.pk, brand_id=account.brand_id,
    )  # fmt: skip
    # An empty TwiML answer: Twilio itself replies to STOP/START on long codes (Advanced Opt-Out).
    return Verified([event], after=lambda fresh: keyword(account, sender, word),
                    answer='<?xml version="1.0" encoding="UTF-8"?><Response/>', content_type="text/xml")  # fmt: skip


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
def sendgrid_events_request(inbound: Inbound, account: ChannelAccount, keys: Keys) -> Verified:
    key = keys.credentials.get("webhook_public_key", "")
    signature = inbound.headers.get("X-Twilio-Email-Event-Webhook-Signature", "")
    timestamp = inbound.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "")
    if not key or not signature or not timestamp:
        raise Rejected(WebhookLog.Verdict.FORGED, "signature headers or the account's public key are missing")
    try:
        valid = EventWebhook(key).verify_signature(inbound.body, signature, timestamp)
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise Rejected(WebhookLog.Verdict.FORGED, "signature does not match")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > REPLAY_WINDOW:
        raise Rejected(WebhookLog.Verdict.STALE, f"timestamp outside the {REPLAY_WINDOW} s replay window")
    try:
        items = json.loads(inbound.body)
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
    return Verified(events)


# -- Telegram ------------------------------------------------------------------------------------------------
def telegram_update_request(inbound: Inbound, account: ChannelAccount, keys: Keys) -> Verified:
    secret = keys.webhook_secret
    given = inbound.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    if not secret or not hmac.compare_digest(secret, given):
        raise Rejected(WebhookLog.Verdict.FORGED, "secret token does not match")
    try:
        update = json.loads(inbound.body)
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

    def after(fresh: list[DeliveryEvent]) -> None:
        if not chat_id:
            return
        if text.startswith("/start"):
            token = text.removeprefix("/start").strip()
            contact = audience_services.contact_from_telegram_token(account.brand, token) if token else None
            if contact is not None:
                audience_services.contact_link_telegram(contact, chat_id, "telegram:/start")
        elif text.upper().lstrip("/") in STOP_WORDS:
            keyword(account, chat_id, text.upper().lstrip("/"))

    return Verified([event], after=after)


# -- the endpoints (the Django views; channels.webhook_server serves the same paths) ----------------------------
TWILIO = ("twilio_sms", "twilio_whatsapp")
ENDPOINTS = {
    "twilio-status": Endpoint("twilio", "status", TWILIO, twilio_status_request),
    "twilio-inbound": Endpoint("twilio", "inbound", TWILIO, twilio_inbound_request),
    "sendgrid-events": Endpoint("sendgrid", "events", ("sendgrid",), sendgrid_events_request),
    "telegram": Endpoint("telegram", "update", ("telegram",), telegram_update_request),
}


@csrf_exempt
@require_POST
def twilio_status(request, account_id: int):
    return _handle(request, ENDPOINTS["twilio-status"], account_id)


@csrf_exempt
@require_POST
def twilio_inbound(request, account_id: int):
    return _handle(request, ENDPOINTS["twilio-inbound"], account_id)


@csrf_exempt
@require_POST
def sendgrid_events(request, account_id: int):
    return _handle(request, ENDPOINTS["sendgrid-events"], account_id)


@csrf_exempt
@require_POST
def telegram_update(request, account_id: int):
    return _handle(request, ENDPOINTS["telegram"], account_id)


def rejections(request):
    """Counts of rejected webhooks by provider and reason (for monitoring)."""
    data = {
        f"{provider}:{verdict}": rejection_count(provider, verdict)
        for provider in ("twilio", "sendgrid", "telegram")
        for verdict in (WebhookLog.Verdict.FORGED, WebhookLog.Verdict.STALE)
    }
    return JsonResponse(data)
