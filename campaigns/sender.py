"""The sender: render a claimed batch, hand it to the provider adapter in one call, record outcomes.

The order matters for "never a duplicate, never a silent loss":
1. under a row lock, only messages still ``queued`` are taken and moved to ``sending`` (commit);
   a second task holding the same ids finds them ``sending`` and leaves them alone;
2. the provider is called once for the batch;
3. the outcomes are written in bulk: sent, retry later (transient, with backoff and jitter, the
   provider's Retry-After honoured), failed (permanent, with the provider's code) plus failover.
A worker killed between 1 and 3 leaves ``sending`` rows that the reconciler marks ``unknown``
unless a provider callback settles them: they are never sent again blindly.
"""

import datetime as dt
import json
import logging
import random
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from audiences.models import ADDRESS_FIELD, Consent, ConsentStatus, Contact, Suppression
from channels.exceptions import ProviderError, ProviderPermanentError, ProviderTransientError
from channels.models import ChannelAccount
from channels.providers import OutboundMessage, get_adapter
from channels.sms import sms_segments
from marketing_hub.models import Brand

from .models import (
    TEMPLATE_FIELDS,
    Campaign,
    CampaignStatus,
    ChannelMode,
    Message,
    MessageStatus,
    MessageTemplate,
    SkipReason,
    Variant,
)
from .rendering import NoContentError, render_message
from .scheduling import QUIET_CHANNELS, outside_quiet_hours
from .templating import CONTACT_FIELDS, TemplateError
from .tokens import signer

log = logging.getLogger(__name__)
BASE_BACKOFF = 2.0  # seconds; doubled per attempt, with full jitter
MAX_BACKOFF = 600.0
UNSUBSCRIBE_SALT = "campaigns.unsubscribe"
PREFERENCES_SALT = "campaigns.preferences"  # its own salt: an unsubscribe token never opens the preferences page
PREFERENCES_VARIABLE = "preferences_url"
# What a claim reads of each contact: the template's variables, and the time zone quiet hours are
# kept in (rendering picks CONTACT_FIELDS only, so the template context does not change).
CLAIMED_CONTACT_FIELDS = (*CONTACT_FIELDS, "time_zone")
STOPPED = (CampaignStatus.CANCELLED, CampaignStatus.COMPLETED)  # campaigns whose messages nothing claims


def backoff(attempt: int, retry_after: float | None = None) -> float:
    delay = random.uniform(0, min(MAX_BACKOFF, BASE_BACKOFF * 2 ** max(attempt - 1, 0)))
    return max(delay, retry_after or 0)


def unsubscribe_token(message) -> str:
    return signer(UNSUBSCRIBE_SALT).dumps([message.pk, message.contact_id, message.channel])


def preferences_token(message) -> str:
    """The preferences page's token: the message and its contact (the page covers every channel).
    Not compressed: two numbers hardly shrink, and zlib was a third of the token's cost."""
    return signer(PREFERENCES_SALT).dumps([message.pk, message.contact_id], compress=False)


def _uses_preferences(template) -> bool:
    """Whether any content of ``template`` mentions ``preferences_url``; worked out once per template
    object (the sender's are per batch), so a message whose template never shows the link does not
    pay for a second token. Without a template, assume it does."""
    if template is None:
        return True
    uses = getattr(template, "_uses_preferences_url", None)
    if uses is None:
        sources = (
            source
            for content in template.contents.all()
            for source in (*(getattr(content, name) for name in TEMPLATE_FIELDS), str(content.whatsapp_variables))
        )
        uses = any(PREFERENCES_VARIABLE in (source or "") for source in sources)
        template._uses_preferences_url = uses
    return uses


def links_for(message) -> dict[str, str]:
    token = unsubscribe_token(message)
    base = settings.PUBLIC_BASE_URL
    links = {"unsubscribe_url": f"{base}/u/{token}/"}
    if _uses_preferences(getattr(message, "template", None)):
        links[PREFERENCES_VARIABLE] = f"{base}/p/{preferences_token(message)}/"
    return links


OUTCOME_FIELDS = [
    "status", "skip_reason", "attempts", "provider_message_id", "sent_at", "segments", "cost", "send_after",
    "error_code", "error_message",
]  # fmt: skip


class _Claimed:
    """One claimed message as plain values (no model instance): what rendering and outcomes need."""

    __slots__ = (
        "pk", "brand_id", "campaign_id", "contact_id", "variant_id", "variant_template_id", "channel", "step",
        "account_id", "template_id", "marketing", "address", "context", "contact", "template",
        *OUTCOME_FIELDS,
    )  # fmt: skip

    def __init__(self, row: dict):
        for name, value in row.items():
            setattr(self, name, value)


def pk_in(ids: list[int]) -> Q:
    """``Q(pk__in=ids)``, as ``id = ANY(array)`` on PostgreSQL: one parameter instead of a thousand
    placeholders to compile, quote and parse (a tenth of a claim's CPU)."""
    return any_of(Message, "id", ids)


def any_of(model, field_name: str, values) -> Q:
    """``Q(<field>__in=values)``; on PostgreSQL ``<column> = ANY(array)`` with the array as one
    parameter. Integers go as the array's text (``{1,2,3}``): the driver's client-side binding
    quotes a list element by element in Python, four times slower."""
    values = list(values)
    if connection.vendor != "postgresql":
        return Q(**{f"{field_name}__in": values})
    field = model._meta.get_field(field_name)
    column = f"{connection.ops.quote_name(model._meta.db_table)}.{connection.ops.quote_name(field.column)}"
    if field.get_internal_type() in ("AutoField", "BigAutoField", "ForeignKey", "BigIntegerField", "IntegerField"):
        # int() of each: only digits and signs reach the text, and a non-integer fails here.
        param, cast = "{" + ",".join(str(int(v)) for v in values) + "}", "bigint[]"
    else:
        param, cast = values, "text[]"
    # The identifier comes from the model's metadata; the values are one parameter.
    return Q(RawSQL(f"{column} = ANY(%s::{cast})", (param,), output_field=BooleanField()))  # noqa: S611


def _claimed_rows(ids: list[int]) -> list[dict]:
    contact = {f"contact__{name}": name for name in CLAIMED_CONTACT_FIELDS}
    names = ["id", "brand_id", "campaign_id", "contact_id", "variant_id", "variant__template_id", "channel",
             "step", "account_id", "template_id", "marketing", "address", "context", *OUTCOME_FIELDS]  # fmt: skip
    rows = Message.objects.filter(pk_in(ids)).order_by("id").values(*names, *contact)
    claimed = []
    for row in rows:
        row["pk"] = row.pop("id")
        row["variant_template_id"] = row.pop("variant__template_id")
        row["contact"] = {short: row.pop(long) for long, short in contact.items()}
        row["contact"]["id"] = row["contact_id"]
        claimed.append(row)
    return claimed


def _claim(ids: list[int]) -> list[_Claimed]:
    """queued → sending for the messages still queued; paused/cancelled campaigns let go.

    The rows come back as plain values in the same round trip as their lock: building a model
    instance per message (and per contact, campaign, variant) cost more than the provider call.
    """
    now = timezone.now()
    if connection.vendor == "postgresql":
        return _claim_postgresql(ids, now)
    with transaction.atomic():
        rows = list(
            Message.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk__in=ids, status=MessageStatus.QUEUED)
            .values_list("id", "campaign_id", "campaign__status")
        )
        go, back, cancelled = [], [], []
        for pk, campaign_id, campaign_status in rows:
            status = campaign_status if campaign_id else CampaignStatus.RUNNING
            (
                go if status == CampaignStatus.RUNNING else cancelled if status == CampaignStatus.CANCELLED else back
            ).append(pk)
        if back:
            Message.objects.filter(pk__in=back).update(status=MessageStatus.PENDING, updated_at=now)
        if cancelled:
            Message.objects.filter(pk__in=cancelled).update(status=MessageStatus.CANCELLED, updated_at=now)
        if go:
            Message.objects.filter(pk__in=go).update(status=MessageStatus.SENDING, updated_at=now)
    return _with_contacts(go, now)


def _with_contacts(ids: list[int], now) -> list[_Claimed]:
    """The claimed messages with their contacts' fields. ``Message.contact`` is not a database
    constraint: a contact deleted while its send was being planned can leave a message behind, which
    is cancelled here (error ``contact_deleted``) instead of staying 'sending' for ever."""
    if not ids:
        return []
    rows = _claimed_rows(ids)
    if len(rows) < len(ids):
        found = {row["pk"] for row in rows}
        _cancel_orphans([pk for pk in ids if pk not in found], now)
    return [_Claimed(row) for row in rows]


# What a claim reads of each message (besides OUTCOME_FIELDS), as _Claimed names them.
_MESSAGE_COLUMNS = ("id", "brand_id", "campaign_id", "contact_id", "variant_id", "channel", "step", "account_id",
                    "template_id", "marketing", "address", "context")  # fmt: skip


def _claim_postgresql(ids: list[int], now) -> list[_Claimed]:
    """``_claim`` in one statement that also reads what sending needs: lock the still-queued rows
    (SKIP LOCKED), move each by its campaign's status (running or none: sending; cancelled:
    cancelled; else back to pending) and return the moved rows with their contact's fields and their
    variant's template (a second SELECT of the claimed rows and contacts cost a tenth of a batch)."""
    quote = connection.ops.quote_name
    tables = {model: quote(model._meta.db_table) for model in (Message, Campaign, Variant, Contact)}
    column = {name: quote(Message._meta.get_field(name).column) for name in (*_MESSAGE_COLUMNS, *OUTCOME_FIELDS)}
    column.update({name: quote(name) for name in ("id", "updated_at")})
    contact_columns = [quote(Contact._meta.get_field(name).column) for name in CLAIMED_CONTACT_FIELDS]
    status, updated_at = column["status"], column["updated_at"]
    variant_template = quote(Variant._meta.get_field("template").column)
    returned = [f"m.{column[name]}" for name in (*_MESSAGE_COLUMNS, *OUTCOME_FIELDS)]
    returned += ["picked.variant_template_id", "picked.contact_found"]
    returned += [f"picked.contact_{i}" for i in range(len(contact_columns))]
    picked_contact = ", ".join(f"ct.{name} AS contact_{i}" for i, name in enumerate(contact_columns))
    # Identifiers come from the model's metadata; every value is a parameter.
    sql = (
        f"UPDATE {tables[Message]} AS m SET {status} = CASE WHEN picked.cs IS NULL OR picked.cs = %s THEN %s "  # noqa: S608
        f"WHEN picked.cs = %s THEN %s ELSE %s END, {updated_at} = %s "
        f"FROM (SELECT q.id, c.{status} AS cs, v.{variant_template} AS variant_template_id, "
        f"ct.id IS NOT NULL AS contact_found, {picked_contact} FROM {tables[Message]} q "
        f"LEFT JOIN {tables[Campaign]} c ON c.id = q.{column['campaign_id']} "
        f"LEFT JOIN {tables[Variant]} v ON v.id = q.{column['variant_id']} "
        f"LEFT JOIN {tables[Contact]} ct ON ct.id = q.{column['contact_id']} "
        f"WHERE q.id = ANY(%s::bigint[]) AND q.{status} = %s FOR UPDATE OF q SKIP LOCKED) AS picked "
        f"WHERE m.id = picked.id RETURNING {', '.join(returned)}"
    )
    params = [CampaignStatus.RUNNING, MessageStatus.SENDING, CampaignStatus.CANCELLED, MessageStatus.CANCELLED,
              MessageStatus.PENDING, now, list(ids), MessageStatus.QUEUED]  # fmt: skip
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    names = ("pk", *_MESSAGE_COLUMNS[1:], *OUTCOME_FIELDS)
    json_fields = [(names.index("context"), Message._meta.get_field("context"))]
    attributes = Contact._meta.get_field("attributes")
    claimed, orphans = [], []
    for row in sorted(rows, key=lambda row: row[0]):
        if row[names.index("status")] != MessageStatus.SENDING:
            continue
        if not row[len(names) + 1]:  # its contact is gone: see _with_contacts
            orphans.append(row[0])
            continue
        values = dict(zip(names, row, strict=False))
        for index, field in json_fields:  # jsonb comes as text; the field decodes it as the ORM would
            values[names[index]] = field.from_db_value(row[index], None, connection)
        values["variant_template_id"] = row[len(names)]
        contact = dict(zip(CLAIMED_CONTACT_FIELDS, row[len(names) + 2 :], strict=True))
        contact["attributes"] = attributes.from_db_value(contact["attributes"], None, connection)
        contact["id"] = values["contact_id"]
        values["contact"] = contact
        claimed.append(_Claimed(values))
    if orphans:
        _cancel_orphans(orphans, now)
    return claimed


def _cancel_orphans(ids: list[int], now) -> None:
    Message.objects.filter(pk_in(ids)).update(
        status=MessageStatus.CANCELLED, error_code="contact_deleted", updated_at=now
    )


def _still_allowed(messages: list[_Claimed]) -> dict[int, str]:
    """Consent or suppression that changed since planning (a STOP mid-campaign): id -> reason."""
    refused: dict[int, str] = {}
    by_channel: dict[str, list[_Claimed]] = {}
    for message in messages:
        by_channel.setdefault(message.channel, []).append(message)
    for channel, group in by_channel.items():
        if channel not in ADDRESS_FIELD:
            continue
        addresses = {m.address for m in group}
        suppressed = set(
            Suppression.objects.filter(any_of(Suppression, "address", addresses))
            .filter(brand_id=group[0].brand_id, channel=channel)
            .values_list("address", flat=True)
        )
        consents = dict(
            Consent.objects.filter(any_of(Consent, "contact", {m.contact_id for m in group}))
            .filter(channel=channel)
            .values_list("contact_id", "status")
        )
        for message in group:
            if message.address in suppressed:
                refused[message.pk] = SkipReason.SUPPRESSED
            elif message.marketing and consents.get(message.contact_id) != ConsentStatus.SUBSCRIBED:
                refused[message.pk] = SkipReason.NO_CONSENT
            elif not message.marketing and consents.get(message.contact_id) == ConsentStatus.UNSUBSCRIBED:
                refused[message.pk] = SkipReason.NO_CONSENT
    return refused


def _outbound(message: _Claimed, account: ChannelAccount, config) -> OutboundMessage:
    template = message.template
    contact = message.contact
    links = {**(message.context or {}), **links_for(message)}
    if message.channel == "webhook":
        payload = {
            "message_id": message.pk,
            "campaign": message.campaign_id,
            "contact": {"id": contact["id"], "external_id": contact["external_id"], "email": contact["email"]},
            "context": message.context,
        }
        return OutboundMessage(message_id=str(message.pk), to=config.credentials.get("url", ""), payload=payload)
    rendered = render_message(
        template=template, channel=message.channel, contact=contact, links=links, message_id=message.pk
    )
    headers = {}
    if message.channel == "email" and message.marketing:
        headers = {
            "List-Unsubscribe": f"<{links['unsubscribe_url']}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
    return OutboundMessage(
        message_id=str(message.pk),
        to=message.address,
        body=rendered.text,
        subject=rendered.subject,
        html=rendered.html,
        from_name=template.brand.sender_name,
        headers=headers,
        content_sid=rendered.content_sid or None,
        content_variables=rendered.content_variables,
        button=rendered.button,
        metadata={"campaign_id": message.campaign_id, "preheader": rendered.preheader},
    )


def send_batch(ids: list[int], now: dt.datetime | None = None) -> dict[str, int]:
    """Send the claimable messages of ``ids``; ``now`` is the clock (tests move it, as dispatch's)."""
    messages = _claim(ids)
    if not messages:
        return {}
    now = now or timezone.now()
    refused = _still_allowed(messages)
    outcome = {"sent": 0, "retry": 0, "failed": 0, "skipped": 0}
    accounts = {a.pk: a for a in ChannelAccount.objects.filter(pk__in={m.account_id for m in messages})}
    configs: dict[int, object] = {}
    template_ids = {m.template_id for m in messages} | {m.variant_template_id for m in messages if m.variant_id}
    templates = {
        t.pk: t
        for t in MessageTemplate.objects.filter(pk__in=template_ids - {None})
        .select_related("brand")
        .prefetch_related("contents")
    }
    for message in messages:  # one shared, prefetched template object per template: no query per message
        chosen = message.variant_template_id if message.variant_id and message.variant_template_id else None
        message.template = templates.get(chosen or message.template_id)
    messages, deferred = _defer_quiet_hours(messages, now)
    outcome["deferred"] = len(deferred)
    updates: list[_Claimed] = deferred
    batch: list[tuple[_Claimed, OutboundMessage]] = []
    for message in messages:
        message.attempts += 1
        if message.pk in refused:
            message.status, message.skip_reason = MessageStatus.SKIPPED, refused[message.pk]
            outcome["skipped"] += 1
            updates.append(message)
            continue
        try:
            account = accounts[message.account_id]
            if account.pk not in configs and message.channel == "webhook":
                configs[account.pk] = account.provider_config()
            batch.append((message, _outbound(message, account, configs.get(account.pk))))
        except (NoContentError, TemplateError, KeyError) as exc:
            message.status, message.error_code = MessageStatus.FAILED, "render_error"
            field = getattr(exc, "field", "")  # which part of the template, for the marketer
            message.error_message = (f"{field}: {exc}" if field else str(exc))[:500]
            outcome["failed"] += 1
            updates.append(message)
    failovers: list[_Claimed] = []
    if batch:
        account = accounts[batch[0][0].account_id]
        results = _call_provider(account, [outbound for _, outbound in batch])
        per = Decimal(account.cost_per_message or 0)
        for (message, outbound), result in zip(batch, results, strict=True):
            if result.accepted:
                message.status = MessageStatus.SENT
                message.provider_message_id = (result.provider_message_id or "")[:100]
                message.sent_at = now
                message.segments = result.segments or (
                    sms_segments(outbound.body)[1] if message.channel == "sms" else 1
                )
                message.cost = per * (message.segments if message.channel == "sms" else 1)
                outcome["sent"] += 1
            elif isinstance(result.error, ProviderTransientError) and message.attempts < settings.SEND_MAX_ATTEMPTS:
                message.status = MessageStatus.PENDING
                message.send_after = now + dt.timedelta(seconds=backoff(message.attempts, result.error.retry_after))
                message.error_code = str(result.error.code or result.error.status or "transient")[:40]
                message.error_message = str(result.error)[:500]
                outcome["retry"] += 1
            else:
                error = result.error or ProviderPermanentError("rejected", provider=account.provider)
                message.status = MessageStatus.FAILED
                message.error_code = str(error.code or error.status or "failed")[:40]
                exhausted = isinstance(error, ProviderTransientError)
                message.error_message = (("retries exhausted: " if exhausted else "") + str(error))[:500]
                outcome["failed"] += 1
                if not exhausted:
                    failovers.append(message)
            updates.append(message)
    # Outcomes and failovers commit together: a campaign never looks finished (nothing open) between
    # a message failing and its failover being planned, so it cannot complete in that gap.
    with transaction.atomic():
        _write_outcomes(updates, now)
        if failovers:
            failed = Message.objects.filter(pk__in=[m.pk for m in failovers]).select_related("contact", "campaign")
            _failover([m for m in failed if m.campaign_id], now)
    return outcome


def _defer_quiet_hours(messages: list[_Claimed], now: dt.datetime) -> tuple[list[_Claimed], list[_Claimed]]:
    """(to send now, deferred): marketing SMS and WhatsApp whose recipient is inside the brand's
    quiet hours go back to pending until the quiet hours end, attempts unchanged.

    The planner already plans around quiet hours, but a retry's backoff, a failover, a resumed or
    requeued message and a campaign carried over by its quota reach the sender at any hour: this is
    the one check every message passes right before the provider call. Transactional messages (the
    API's, ``marketing=False``: a one-time code, a receipt) are expected now and are never deferred.
    The recipient's clock is the contact's time zone, else the brand's. No query: the brand comes
    with the batch's templates (only for a message without a template is it read, once a batch).
    """
    quiet = [m for m in messages if m.marketing and m.channel in QUIET_CHANNELS]
    if not quiet:
        return messages, []
    brands = {m.brand_id: m.template.brand for m in quiet if m.template is not None}
    missing = {m.brand_id for m in quiet} - brands.keys()
    if missing:
        brands.update(Brand.objects.in_bulk(missing))
    deferred: list[_Claimed] = []
    until: dict[tuple[int, str], dt.datetime] = {}  # per brand and time zone: a batch has few
    for message in quiet:
        brand = brands.get(message.brand_id)
        if brand is None or brand.quiet_hours_start is None or brand.quiet_hours_end is None:
            continue
        zone = message.contact.get("time_zone") or brand.time_zone
        key = (brand.pk, zone)
        if key not in until:
            until[key] = outside_quiet_hours(now, zone, brand.quiet_hours_start, brand.quiet_hours_end)
        later = until[key]
        if later != now:
            message.status, message.send_after = MessageStatus.PENDING, later
            deferred.append(message)
    if not deferred:
        return messages, []
    held = {m.pk for m in deferred}
    return [m for m in messages if m.pk not in held], deferred


def _write_outcomes(messages: list[_Claimed], now) -> None:
    """All outcomes of a batch in one statement (PostgreSQL: an UPDATE joined to the rows given as one
    JSON document); elsewhere one parameterized UPDATE per message, sent as a batch. Django's
    bulk_update builds a CASE per field and row, which costs more than the provider call it records.

    A retry (back to pending) of a campaign that was cancelled or completed meanwhile is written as
    cancelled: nothing claims a stopped campaign's messages, so a pending one would stay for ever.
    """
    if not messages:
        return
    with transaction.atomic(savepoint=False):
        statuses = _lock_campaigns({m.campaign_id for m in messages if m.campaign_id})
        for message in messages:
            if message.status == MessageStatus.PENDING and statuses.get(message.campaign_id) in STOPPED:
                message.status = MessageStatus.CANCELLED
        _write_outcome_rows(messages, now)


def _lock_campaigns(ids: set[int]) -> dict[int, str]:
    """The campaigns' statuses, each row held ``FOR KEY SHARE`` until the caller's transaction ends.

    A cancel takes the campaign's row ``FOR UPDATE`` before it cancels what is pending, so the two
    are ordered: either the cancel commits first and its status is read here, or it waits for this
    transaction and then finds the retries pending. (Without the lock a retry written while a cancel
    was committing stayed pending: the cancel's UPDATE had passed the row while it was 'sending'.)
    Senders do not wait for each other: KEY SHARE conflicts only with FOR UPDATE.
    """
    if not ids:
        return {}
    if connection.vendor != "postgresql":  # SQLite: the write transaction already excludes a cancel
        return dict(Campaign.objects.filter(pk__in=ids).values_list("id", "status"))
    table = connection.ops.quote_name(Campaign._meta.db_table)
    with connection.cursor() as cursor:
        # The table name comes from the model's metadata; the ids are one parameter. In id order, as
        # every locker of several campaigns should.
        cursor.execute(
            f"SELECT id, status FROM {table} WHERE id = ANY(%s::bigint[]) ORDER BY id FOR KEY SHARE",  # noqa: S608
            ["{" + ",".join(str(int(pk)) for pk in sorted(ids)) + "}"],
        )
        return dict(cursor.fetchall())


def _write_outcome_rows(messages: list[_Claimed], now) -> None:
    """The outcomes' UPDATE, in the caller's transaction."""
    fields = [Message._meta.get_field(name) for name in OUTCOME_FIELDS]
    quote = connection.ops.quote_name
    table = quote(Message._meta.db_table)
    # A provider callback may have moved the message on (delivered) while the batch was still being
    # sent: the status then stays where the callback put it; the rest is recorded all the same.
    status = quote("status")
    # Identifiers come from the model's metadata; every value is a parameter.
    if connection.vendor == "postgresql":
        assignments = ", ".join(
            f"{status} = CASE WHEN m.{status} = 'sending' THEN d.{status} ELSE m.{status} END"
            if f.name == "status"
            else f"{quote(f.column)} = d.{quote(f.column)}"
            for f in fields
        )
        # The rows travel as one JSON document unpacked by json_to_recordset: one string parameter.
        # As ten typed arrays the driver quoted every element in Python (client-side binding), 25 µs
        # a message, mostly for the timestamps; json.dumps does the same in C.
        columns = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in fields)
        sql = (
            f"UPDATE {table} AS m SET {assignments}, {quote('updated_at')} = %s "  # noqa: S608
            f"FROM json_to_recordset(%s::json) AS d(id bigint, {columns}) WHERE m.id = d.id"
        )
        names = [f.attname for f in fields]
        rows = [[m.pk, *(getattr(m, name) for name in names)] for m in messages]
        keys = ["id", *(f.column for f in fields)]
        params = [now, json.dumps([dict(zip(keys, row, strict=True)) for row in rows], default=_json_value)]
        with connection.cursor() as cursor:  # inside _write_outcomes' transaction
            cursor.execute(sql, params)
        return
    assignments = ", ".join(
        f"{status} = CASE WHEN {status} = 'sending' THEN %s ELSE {status} END"
        if f.name == "status"
        else f"{quote(f.column)} = %s"
        for f in fields
    )
    sql = f"UPDATE {table} SET {assignments}, {quote('updated_at')} = %s WHERE id = %s"  # noqa: S608
    rows = [[f.get_db_prep_save(getattr(m, f.attname), connection) for f in fields] + [now, m.pk] for m in messages]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _json_value(value) -> str:
    """Timestamps and amounts as PostgreSQL reads them back exactly (ISO 8601 with offset, decimal text)."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} as an outcome value")


def _call_provider(account: ChannelAccount, outbound: list[OutboundMessage]):
    from channels.providers import SendResult

    try:
        adapter = get_adapter(account.provider_config(), cached=True)
        return adapter.send(outbound)
    except ProviderError as exc:
        error = (
            exc
            if isinstance(exc, ProviderTransientError | ProviderPermanentError)
            else ProviderTransientError(str(exc), provider=account.provider)
        )
        return [SendResult(message_id=o.message_id, accepted=False, error=error) for o in outbound]
    except Exception as exc:  # any other failure of the call: retry later, logged in full
        log.exception("provider call failed for account %s", account.pk)
        error = ProviderTransientError(f"{type(exc).__name__}: {exc}", provider=account.provider)
        return [SendResult(message_id=o.message_id, accepted=False, error=error) for o in outbound]


def _failover(failed: list[Message], now: dt.datetime) -> None:
    """Permanent failure under a 'failover' strategy: plan the same contact on the next reachable step.

    Only for a campaign still running or paused: a cancelled or completed one is claimed no more, so
    a message planned for it would stay pending for ever. The caller holds the campaigns' rows (see
    ``_write_outcomes``), so the status read here cannot change before the new message commits.
    """
    for message in failed:
        campaign = message.campaign
        if campaign is None or campaign.channel_mode != ChannelMode.FAILOVER:
            continue
        if campaign.status not in (CampaignStatus.RUNNING, CampaignStatus.PAUSED):
            continue
        steps = list(campaign.channels.select_related("account").order_by("position"))
        for index, step in enumerate(steps):
            if index <= message.step:
                continue
            channel = step.account.channel
            address = message.contact.address_for(channel) if channel != "webhook" else ""
            if channel != "webhook" and not address:
                continue
            consent = Consent.objects.filter(contact_id=message.contact_id, channel=channel).first()
            if channel != "webhook" and (consent is None or consent.status != ConsentStatus.SUBSCRIBED):
                continue
            if Suppression.objects.filter(brand_id=message.brand_id, channel=channel, address=address).exists():
                continue
            try:
                with transaction.atomic():
                    Message.objects.create(
                        brand_id=message.brand_id, campaign=campaign, send_id=message.send_id,
                        contact_id=message.contact_id, variant_id=message.variant_id, channel=channel, step=index,
                        account=step.account, template_id=step.template_id, priority=message.priority,
                        status=MessageStatus.PENDING, send_after=now, address=address or "",
                    )  # fmt: skip
            except IntegrityError:
                pass  # already planned on that channel for this send
            break
