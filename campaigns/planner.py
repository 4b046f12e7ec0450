"""The planner: materializes a send's recipients in set-based statements (one for first-reachable and
failover plans; one per step plus one for the skipped in every-channel plans).

For every contact of the audience it decides, inside the database, the channel (the first step of
the strategy that is reachable: address, consent, no suppression, under the frequency cap), the
A/B variant (a deterministic hash of contact and campaign) and ``send_after`` (now, a set time, or
a local time of day, moved out of the brand's quiet hours for SMS and WhatsApp). Contacts that no
step reaches are written too, as skipped with the reason, so targeted = queued + skipped always.

The SELECT that decides reachability (the audience and a reason code per step) is built by the
ORM; ours are the thin outer SELECT that turns those integers into the message columns and the
surrounding ``INSERT INTO … SELECT … ON CONFLICT DO NOTHING``. Every value is a parameter, never
SQL text. Re-planning a send adds nothing: the UNIQUE (send, contact, channel) constraint makes a
duplicate impossible. See docs/benchmarks.md for why the two layers (one evaluation of each
subquery per contact).
"""

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial

from django.db import connection, transaction
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest, Mod
from django.utils import timezone

from audiences.models import ADDRESS_FIELD, ConsentStatus, Contact, ListMembership, Suppression, consent_column
from audiences.services import segment_members
from channels.models import ChannelAccount
from channels.sms import sms_segments
from marketing_hub.models import Brand

from .models import (
    COUNTED_AS_SENT,
    OPEN_STATUSES,
    Campaign,
    CampaignStatus,
    ChannelMode,
    Message,
    MessageStatus,
    MessageTemplate,
    ScheduleKind,
    Send,
    SkipReason,
    Variant,
)
from .scheduling import QUIET_CHANNELS, next_local_time, outside_quiet_hours
from .templating import sms_estimate_text

# Reason codes, ordered so that the highest is the "closest to reachable" one reported.
REASONS = {1: SkipReason.NO_ADDRESS, 2: SkipReason.NO_CONSENT, 3: SkipReason.SUPPRESSED, 4: SkipReason.FREQUENCY_CAP}
CAP_WINDOW = dt.timedelta(days=7)  # a frequency cap counts a contact's messages over this window
HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative hash: spreads consecutive ids evenly


class PlanningError(ValueError):
    pass


@dataclass
class Plan:
    targeted: int = 0
    by_channel: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    by_variant: dict[str, int] = field(default_factory=dict)

    @property
    def queued(self) -> int:
        return sum(self.by_channel.values())


# -- the audience ----------------------------------------------------------------------------------------
def audience(campaign: Campaign):
    """Live contacts in any of the campaign's segments or lists and in none of its exclusions."""
    segments, lists = list(campaign.segments.all()), list(campaign.lists.all())
    if not segments and not lists:
        raise PlanningError("Choose at least one segment or list as the audience.")
    base = Contact.objects.filter(brand_id=campaign.brand_id, erased_at__isnull=True)
    included = Q(pk__in=[])
    for segment in segments:
        included |= Q(pk__in=segment_members(segment).values("pk"))
    if lists:
        included |= Q(Exists(ListMembership.objects.filter(contact=OuterRef("pk"), contact_list__in=lists)))
    excluded = Q(pk__in=[])
    for segment in campaign.exclude_segments.all():
        excluded |= Q(pk__in=segment_members(segment).values("pk"))
    exclude_lists = list(campaign.exclude_lists.all())
    if exclude_lists:
        excluded |= Q(Exists(ListMembership.objects.filter(contact=OuterRef("pk"), contact_list__in=exclude_lists)))
    return base.filter(included).exclude(excluded)


# -- reachability per step ---------------------------------------------------------------------------------
def _counted_by_cap(now: dt.datetime) -> Q:
    """The messages a frequency cap counts: those that went out in the last 7 days (by ``sent_at``, not
    by when they were planned: a send paused for a week goes out later) and those still on their way
    (pending, queued, sending: they will go out). A message whose worker was lost during the provider
    call (unknown) has no ``sent_at``; it may have gone out when it was last touched."""
    since = now - CAP_WINDOW
    return (
        Q(status__in=OPEN_STATUSES)
        | Q(status__in=COUNTED_AS_SENT, sent_at__gte=since)
        | Q(status=MessageStatus.UNKNOWN, sent_at__isnull=True, updated_at__gte=since)
    )


def _reason(step_index: int, channel: str, campaign: Campaign, send: Send | None, now: dt.datetime):
    """An integer expression: 0 when the step reaches the contact, else a REASONS code.

    ``send`` is the send being planned (None for a dry run): only its own messages are left out of
    the frequency cap, so a recurring campaign's earlier occurrences count like other campaigns."""
    if channel == "webhook":
        return Value(0)
    address = ADDRESS_FIELD[channel]
    consent = Q(**{consent_column(channel): ConsentStatus.SUBSCRIBED})  # the contact's copy of its consent row
    # Uncorrelated (the brand is the campaign's): PostgreSQL hashes the brand's suppressions once
    # instead of probing the index per contact.
    suppressed = Q(
        **{f"{address}__in": Suppression.objects.filter(brand_id=campaign.brand_id, channel=channel).values("address")}
    )
    whens = [
        When(Q(**{f"{address}__isnull": True}) | Q(**{address: ""}), then=Value(1)),
        When(~consent, then=Value(2)),
        When(suppressed, then=Value(3)),
    ]
    if campaign.frequency_cap:
        recent = Message.objects.filter(_counted_by_cap(now), contact=OuterRef("pk"), channel=channel, marketing=True)
        if send is not None:  # this send's own messages (a re-plan, an earlier range) are not earlier ones
            recent = recent.exclude(send=send)
        recent = recent.order_by().values("contact").annotate(n=Count("id")).values("n")
        whens.append(When(Q(**{f"_recent_{step_index}__gte": campaign.frequency_cap}), then=Value(4)))
        return Case(*whens, default=Value(0), output_field=IntegerField()), Coalesce(Subquery(recent), 0)
    return Case(*whens, default=Value(0), output_field=IntegerField())


def _with_reasons(queryset, campaign: Campaign, send: Send | None, steps: list, now: dt.datetime):
    """``queryset`` annotated with ``_reason_<i>`` per step (and ``_recent_<i>`` under a frequency cap)."""
    for index, step in enumerate(steps):
        reason = _reason(index, step.account.channel, campaign, send, now)
        if isinstance(reason, tuple):
            queryset = queryset.annotate(**{f"_recent_{index}": reason[1]})
            reason = reason[0]
        queryset = queryset.annotate(**{f"_reason_{index}": reason})
    return queryset


def _annotated(queryset, campaign: Campaign, steps: list, now: dt.datetime):
    queryset = _with_reasons(queryset, campaign, None, steps, now)
    chosen = Case(
        *[When(**{f"_reason_{i}": 0}, then=Value(i)) for i in range(len(steps))],
        default=Value(-1),
        output_field=IntegerField(),
    )
    worst = Greatest(*[F(f"_reason_{i}") for i in range(len(steps))]) if len(steps) > 1 else F("_reason_0")
    return queryset.annotate(_chosen=chosen, _why=worst)


# -- when ----------------------------------------------------------------------------------------------
def _base_time(campaign: Campaign, send: Send, now: dt.datetime) -> dt.datetime:
    if campaign.schedule_kind == ScheduleKind.AT and campaign.scheduled_at:
        return max(campaign.scheduled_at, now)
    if campaign.schedule_kind == ScheduleKind.RECURRING and send.occurrence not in ("once", ""):
        return max(dt.datetime.fromisoformat(send.occurrence), now)
    return now


def _send_times(queryset, campaign: Campaign, send: Send, now: dt.datetime) -> dict[str, tuple]:
    """Per contact time zone: (send time, send time moved out of quiet hours). Few distinct zones."""
    brand = campaign.brand
    base = _base_time(campaign, send, now)
    times = {}
    for zone in set(queryset.order_by().values_list("time_zone", flat=True).distinct()):
        tz = zone or brand.time_zone
        moment = base
        if campaign.schedule_kind == ScheduleKind.LOCAL_TIME and campaign.local_time:
            moment = next_local_time(base, tz, campaign.local_time)
        times[zone] = (moment, outside_quiet_hours(moment, tz, brand.quiet_hours_start, brand.quiet_hours_end))
    return times


def _send_after(times: dict, base: dt.datetime, quiet) -> tuple[str, list]:
    """SQL over the planned row ``p``: ``quiet`` is True/False for a fixed channel, or the list of
    quiet-sensitive steps (by ``p._chosen``)."""
    whens, params = [], []
    for zone, (moment, quiet_moment) in times.items():
        if isinstance(quiet, list) and quiet and quiet_moment != moment:
            whens.append(f"WHEN p.time_zone = %s AND p._chosen IN ({', '.join(['%s'] * len(quiet))}) THEN %s")
            params += [zone, *quiet, quiet_moment]
        whens.append("WHEN p.time_zone = %s THEN %s")
        params += [zone, quiet_moment if quiet is True else moment]
    return f"CASE {' '.join(whens)} ELSE %s END", [*params, base]


# -- writing -----------------------------------------------------------------------------------------------
COLUMNS = [
    "brand_id", "campaign_id", "send_id", "contact_id", "variant_id", "channel", "step", "account_id",
    "template_id", "marketing", "priority", "status", "skip_reason", "send_after", "attempts", "address",
    "provider_message_id", "error_code", "error_message", "segments", "cost", "context", "created_at", "updated_at",
]  # fmt: skip


def _planned_rows(queryset, steps: list, variant_bucket) -> tuple[str, list]:
    """``FROM``-clause SQL: the audience with each step's reason computed ONCE per contact.

    The ORM builds the inner SELECT (id, time zone, addresses, ``_reason_<i>``, ``_bucket``). ``OFFSET
    0`` keeps PostgreSQL from pulling it up into the outer query, where every column expression that
    mentions ``_chosen`` would repeat the per-contact consent, suppression and frequency subqueries
    (they were evaluated up to eight times a row). The outer layer adds ``_chosen`` (the first step
    that reaches the contact, -1 for none) and ``_why`` (the highest reason code) from plain integers.
    """
    fields = ["id", "time_zone", *sorted({ADDRESS_FIELD[s.account.channel] for s in steps if s.account.channel in
                                          ADDRESS_FIELD})]  # fmt: skip
    reasons = [f"_reason_{i}" for i in range(len(steps))]
    if variant_bucket is not None:
        queryset = queryset.annotate(_bucket=variant_bucket)
        reasons.append("_bucket")
    inner_sql, inner_params = queryset.order_by().values(*fields, *reasons).query.sql_with_params()
    chosen = " ".join(f"WHEN r._reason_{i} = 0 THEN {i}" for i in range(len(steps)))
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"  # SQLite: the multi-argument max()
    worst = f"{greatest}({', '.join(f'r._reason_{i}' for i in range(len(steps)))})" if len(steps) > 1 else "r._reason_0"
    fence = "OFFSET 0" if connection.vendor == "postgresql" else "LIMIT -1 OFFSET 0"
    sql = f"(SELECT r.*, CASE {chosen} ELSE -1 END AS _chosen, {worst} AS _why FROM ({inner_sql} {fence}) r) p"  # noqa: S608 - ORM SQL, integers
    return sql, list(inner_params)


def _insert_select(
    source: tuple[str, list],
    values: dict,
    where: str = "",
    where_params=(),
    skip_duplicates: bool = True,
    counted: bool = False,
):
    """INSERT one message per row of ``source`` (see ``_planned_rows``) shaped by ``values`` (column ->
    SQL over ``p`` and its parameters); skip duplicates. Every value is a parameter.

    Returns the number of rows written, or with ``counted`` (PostgreSQL) the rows written counted by
    (channel, status, skip reason, variant id), from the INSERT's own RETURNING: no second read of a
    million rows to summarize them."""
    selects, params = [], []
    for column in COLUMNS:
        sql, column_params = values[column]
        selects.append(sql)
        params += column_params
    params += source[1]
    columns = ", ".join(connection.ops.quote_name(c) for c in COLUMNS)
    table = connection.ops.quote_name(Message._meta.db_table)
    sql = f"INSERT INTO {table} ({columns}) SELECT {', '.join(selects)} FROM {source[0]}"  # noqa: S608 - no values
    # Always a WHERE: SQLite would read "FROM (...) p ON CONFLICT" as a join constraint.
    sql += f" WHERE {where or '1 = 1'}"
    params += list(where_params)
    sql += " ON CONFLICT DO NOTHING" if skip_duplicates else ""
    if counted:
        sql = (
            f"WITH written AS ({sql} RETURNING channel, status, skip_reason, variant_id) "  # noqa: S608 - as above
            "SELECT channel, status, skip_reason, variant_id, count(*) FROM written GROUP BY 1, 2, 3, 4"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if counted else cursor.rowcount


def _param(value) -> tuple[str, list]:
    return ("NULL", []) if value is None else ("%s", [value])


def _by_step(steps: list, attribute, default: str = "NULL") -> tuple[str, list]:
    """``CASE p._chosen WHEN 0 THEN <attribute of step 0> ... ELSE default END``."""
    whens, params = [], []
    for index, step in enumerate(steps):
        sql, step_params = attribute(step)
        whens.append(f"WHEN {index} THEN {sql}")
        params += step_params
    return f"CASE p._chosen {' '.join(whens)} ELSE {default} END", params


def _variant_sql(campaign: Campaign):
    """(bucket expression for the inner query, SQL choosing the variant from ``p._bucket``)."""
    variants = list(campaign.variants.all())
    if not variants:
        return None, ("NULL", [])
    total = sum(v.weight for v in variants) or 1
    bucket = Mod(F("id") * HASH_MULTIPLIER + campaign.pk * 40503, Value(total))
    whens, params, upper = [], [], 0
    for variant in variants[:-1]:
        upper += variant.weight
        whens.append("WHEN p._bucket < %s THEN %s")
        params += [upper, variant.pk]
    if not whens:
        return bucket, ("%s", [variants[-1].pk])
    return bucket, (f"CASE {' '.join(whens)} ELSE %s END", [*params, variants[-1].pk])


def _hold_referenced_rows(campaign: Campaign, steps: list) -> None:
    """``FOR KEY SHARE`` on the rows every planned message points at, once: the foreign-key checks that
    ``Message`` does without (see its fields) took this lock per row, so none of them can be deleted
    before the plan commits. (On SQLite the write transaction already excludes every other writer.)"""
    if connection.vendor != "postgresql":
        return
    held = [
        (Brand, [campaign.brand_id]),
        (Campaign, [campaign.pk]),
        (Variant, list(campaign.variants.values_list("pk", flat=True))),
        (ChannelAccount, [step.account_id for step in steps]),
        (MessageTemplate, [step.template_id for step in steps]),
    ]
    with connection.cursor() as cursor:
        for model, ids in held:
            table = connection.ops.quote_name(model._meta.db_table)
            # The table name comes from the model's metadata; the ids are one parameter.
            cursor.execute(f"SELECT 1 FROM {table} WHERE id = ANY(%s) FOR KEY SHARE", [ids])  # noqa: S608


@dataclass
class _Job:
    """A send's plan, validated and turned into SQL pieces once; ``write`` runs it over some contacts."""

    send: Send
    now: dt.datetime
    campaign: Campaign
    steps: list
    queryset: object  # the audience (with the contact filter), without reasons
    base_time: dt.datetime
    bucket: object
    variant: tuple
    common: dict
    skipped: dict
    skip_reason: tuple
    same_channel_twice: bool

    def write(self, contacts, skip_duplicates: bool, counted: bool):
        """INSERT the messages of ``contacts`` (a filter of ``queryset``); with ``counted`` (PostgreSQL, a
        first-reachable plan) returns the rows written counted as ``_insert_select`` does, else None."""
        campaign, steps = self.campaign, self.steps
        # The time zones of these contacts only: a first range is planned without a scan of the audience.
        times = _send_times(contacts, campaign, self.send, self.now)
        if not times:  # no contact here (a range of ids without any of the audience): nothing to write
            return None
        source = _planned_rows(_with_reasons(contacts, campaign, self.send, steps, self.now), steps, self.bucket)
        insert = partial(_insert_select, skip_duplicates=skip_duplicates or self.same_channel_twice)
        if connection.vendor == "postgresql":
            # The statements below cost enough to trigger JIT compilation, which took seconds (more
            # than it saved) for their many CASE expressions. A launch hashes the audience and sorts
            # the messages it wrote (summarize): give it the memory instead of spilling to disk.
            # LOCAL: for this transaction only.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL jit = off")
                cursor.execute("SET LOCAL work_mem = '64MB'")
        common, skip_reason = self.common, self.skip_reason
        if campaign.channel_mode == ChannelMode.EVERY_CHANNEL:
            for index, step in enumerate(steps):
                quiet = step.account.channel in QUIET_CHANNELS
                values = {**common, **_step_values(step, index, _send_after(times, self.base_time, quiet))}
                insert(source, values, f"p._reason_{index} = 0")
            insert(source, self.skipped, "p._chosen = -1")
            return None
        # One statement for reached and skipped contacts alike: the audience is read once.
        quiet_steps = [i for i, step in enumerate(steps) if step.account.channel in QUIET_CHANNELS]
        send_after, send_after_params = _send_after(times, self.base_time, quiet_steps)
        reached = "p._chosen >= 0"
        values = {
            **common,
            "channel": _by_step(steps, lambda s: ("%s", [s.account.channel]), "''"),
            "step": (f"CASE WHEN {reached} THEN p._chosen ELSE 0 END", []),
            "account_id": _by_step(steps, lambda s: _param(s.account_id)),
            "template_id": _by_step(steps, lambda s: _param(s.template_id)),
            "status": (f"CASE WHEN {reached} THEN %s ELSE %s END", [MessageStatus.PENDING, MessageStatus.SKIPPED]),
            "skip_reason": (f"CASE WHEN {reached} THEN '' ELSE {skip_reason[0]} END", skip_reason[1]),
            "send_after": (f"CASE WHEN {reached} THEN {send_after} END", send_after_params),
            "address": _by_step(steps, lambda s: _address_sql(s.account.channel), "''"),
        }
        if counted and connection.vendor == "postgresql":
            # One row per contact, all written by this statement: its RETURNING is the summary.
            return insert(source, values, counted=True)
        insert(source, values)
        return None


def _checked_steps(campaign: Campaign) -> list:
    steps = list(campaign.channels.select_related("account", "template").order_by("position"))
    if not steps:
        raise PlanningError("Add at least one channel (account and template) to the campaign.")
    inactive = [str(step.account) for step in steps if not step.account.is_active]
    if inactive:
        raise PlanningError(f"Sender account {inactive[0]} is not active.")
    return steps


def plannable_steps(campaign: Campaign) -> list:
    """The campaign's channel steps in order, or PlanningError saying why it cannot be planned."""
    steps = _checked_steps(campaign)
    audience(campaign)  # raises when there is no audience
    return steps


def _prepare(send: Send, now: dt.datetime, contact_filter: Q | None) -> _Job:
    """Validate the send's campaign and build its SQL pieces. Raises PlanningError; writes nothing."""
    campaign = send.campaign
    steps = _checked_steps(campaign)
    queryset = audience(campaign)  # raises when there is no audience
    if contact_filter is not None:
        queryset = queryset.filter(contact_filter)
    bucket, variant = _variant_sql(campaign)
    common = {
        "brand_id": ("%s", [campaign.brand_id]),
        "campaign_id": ("%s", [campaign.pk]),
        "send_id": ("%s", [send.pk]),
        "contact_id": ("p.id", []),
        "variant_id": variant,
        "marketing": ("%s", [True]),
        "priority": ("%s", [campaign.priority]),
        "attempts": ("0", []),
        "provider_message_id": ("''", []),
        "error_code": ("''", []),
        "error_message": ("''", []),
        "segments": ("0", []),
        "cost": ("0", []),
        "context": ("%s", ["{}"]),
        "created_at": ("%s", [now]),
        "updated_at": ("%s", [now]),
    }
    skip_reason = (
        f"CASE p._why {' '.join('WHEN %s THEN %s' for _ in REASONS)} END",
        [item for code, reason in REASONS.items() for item in (code, reason.value)],
    )
    skipped = {
        **common,
        "channel": ("''", []),
        "step": ("0", []),
        "account_id": ("NULL", []),
        "template_id": ("NULL", []),
        "status": ("%s", [MessageStatus.SKIPPED]),
        "skip_reason": skip_reason,
        "send_after": ("NULL", []),
        "address": ("''", []),
    }
    channels = [step.account.channel for step in steps]
    job = _Job(
        send=send, now=now, campaign=campaign, steps=steps, queryset=queryset,
        base_time=_base_time(campaign, send, now), bucket=bucket, variant=variant, common=common,
        skipped=skipped, skip_reason=skip_reason,
        same_channel_twice=campaign.channel_mode == ChannelMode.EVERY_CHANNEL and len(set(channels)) < len(steps),
    )  # fmt: skip
    return job


def plan_send(
    send: Send, now: dt.datetime | None = None, contact_filter: Q | None = None, partly_planned: bool = False
) -> Plan:
    """Materialize the send's messages in one transaction. Idempotent: planning again adds nothing.

    ``partly_planned``: some of the send's messages may exist without its ``planned_at`` (a plan in
    ranges that did not finish): add only what is missing."""
    now = now or timezone.now()
    job = _prepare(send, now, contact_filter)
    with transaction.atomic():
        # Planners of the same send take turns. The first plan of a send cannot conflict with itself
        # (one row per contact, or per contact and step with every channel), so it skips ON
        # CONFLICT's speculative insertion, which cost ~10 % of the INSERT; re-planning (a retried
        # launch) and every-channel plans with two steps on one channel keep it and add nothing.
        # A send's messages and its planned_at are written in this one transaction: a send planned
        # before is one with planned_at (no look-up of its messages, which have no index by send).
        locked = Send.objects.select_for_update(no_key=True).values_list("planned_at", flat=True).get(pk=send.pk)
        replanning = locked is not None or partly_planned
        _hold_referenced_rows(job.campaign, job.steps)
        counts = job.write(job.queryset, skip_duplicates=replanning, counted=not replanning)
        plan = _plan(job.campaign, counts) if counts is not None else summarize(send)
        if counts is not None:
            plan.targeted = plan.queued + sum(plan.skipped.values())
        Send.objects.filter(pk=send.pk).update(targeted=plan.targeted, planned_at=now)
    return plan


PLAN_FIRST_RANGE = 2_000  # contact ids in the first range: sending starts once these are planned
PLAN_RANGE_GROWTH = 4  # each next range this many times larger: few statements, each committed soon
PLAN_LOCK_SPACE = 0x5E4D << 40  # PostgreSQL advisory lock keys of send planners: this plus the send's id


def plan_send_in_ranges(
    send: Send,
    now: dt.datetime | None = None,
    contact_filter: Q | None = None,
    resume: bool = False,
    after_range=None,
) -> Plan | None:
    """Materialize the send's messages range by range of contact ids, each range committed on its own
    (PostgreSQL, outside any transaction), so that sending starts while the rest is planned.

    The ranges grow from ``PLAN_FIRST_RANGE`` ids by ``PLAN_RANGE_GROWTH``; ``after_range`` runs after each commit
    (the launch kicks the dispatcher). ``planned_at`` is set, with ``targeted``, only once every
    range is written: until then the campaign cannot complete, and beat's tick resumes a plan whose
    planner died (``resume``: ON CONFLICT keeps what was already written, so nothing is planned
    twice; the summary is then read back from the messages). A session-level advisory lock keeps a
    second planner of the same send out while this one works; it is released with the connection if
    the process dies. A campaign cancelled meanwhile stops the plan after the current range.
    Returns the plan, or None when another planner holds the send or it was planned already.
    """
    now = now or timezone.now()
    key = PLAN_LOCK_SPACE + send.pk
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        if not cursor.fetchone()[0]:
            return None
    try:
        if Send.objects.filter(pk=send.pk, planned_at__isnull=False).exists():
            return None
        job = _prepare(send, now, contact_filter)
        # Over every brand's ids (the primary key's two ends: no scan); later contacts are not in
        # this send, as they would not be in a one-statement plan that had already started.
        bounds = Contact.objects.aggregate(low=Min("id"), high=Max("id"))
        low, size, high = bounds["low"], PLAN_FIRST_RANGE, bounds["high"]
        plan, cancelled = Plan(), False
        while low is not None and low <= high and not cancelled:
            with transaction.atomic():
                _hold_referenced_rows(job.campaign, job.steps)  # a cancel waits for this range's commit
                status = Campaign.objects.filter(pk=job.campaign.pk).values_list("status", flat=True).first()
                cancelled = status == CampaignStatus.CANCELLED
                if not cancelled:
                    contacts = job.queryset.filter(pk__gte=low, pk__lt=low + size)
                    counts = job.write(contacts, skip_duplicates=resume, counted=not resume)
                    if counts is not None:
                        _add_counts(plan, job.campaign, counts)
                    if after_range is not None:
                        transaction.on_commit(after_range)
            low, size = low + size, size * PLAN_RANGE_GROWTH
        with transaction.atomic():
            if resume or cancelled or job.campaign.channel_mode == ChannelMode.EVERY_CHANNEL:
                plan = summarize(send)
            else:
                plan.targeted = plan.queued + sum(plan.skipped.values())
            Send.objects.filter(pk=send.pk).update(targeted=plan.targeted, planned_at=now)
        return plan
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def _add_counts(plan: Plan, campaign: Campaign, counts) -> None:
    part = _plan(campaign, counts)
    for total, more in ((plan.by_channel, part.by_channel), (plan.skipped, part.skipped),
                        (plan.by_variant, part.by_variant)):  # fmt: skip
        for name, n in more.items():
            total[name] = total.get(name, 0) + n


def _step_values(step, index: int, send_after: tuple[str, list]) -> dict:
    channel = step.account.channel
    return {
        "channel": ("%s", [channel]),
        "step": ("%s", [index]),
        "account_id": _param(step.account_id),
        "template_id": _param(step.template_id),
        "status": ("%s", [MessageStatus.PENDING]),
        "skip_reason": ("''", []),
        "send_after": send_after,
        "address": _address_sql(channel),
    }


def _address_sql(channel: str) -> tuple[str, list]:
    if channel == "webhook":
        return "''", []
    return f"COALESCE(NULLIF(p.{connection.ops.quote_name(ADDRESS_FIELD[channel])}, ''), '')", []


def summarize(send: Send) -> Plan:
    """The send's plan as its messages say: what re-planning and every-channel plans report."""
    messages = Message.objects.filter(campaign_id=send.campaign_id, send=send)  # through the campaign's index
    rows = messages.values("channel", "status", "skip_reason", "contact_id")
    counts = messages.order_by().values_list("channel", "status", "skip_reason", "variant_id").annotate(n=Count("id"))
    plan = _plan(send.campaign, counts)
    plan.targeted = rows.order_by().values("contact_id").distinct().count()
    return plan


def _plan(campaign: Campaign, counts) -> Plan:
    """A ``Plan`` (without ``targeted``) from message counts by (channel, status, skip reason, variant id)."""
    plan = Plan()
    names = dict(campaign.variants.values_list("pk", "name"))
    for channel, status, skip_reason, variant_id, n in counts:
        if status == MessageStatus.SKIPPED:
            plan.skipped[skip_reason] = plan.skipped.get(skip_reason, 0) + n
        else:
            plan.by_channel[channel] = plan.by_channel.get(channel, 0) + n
        if variant_id in names:
            plan.by_variant[names[variant_id]] = plan.by_variant.get(names[variant_id], 0) + n
    return plan


# -- dry run -----------------------------------------------------------------------------------------------
def dry_run(campaign: Campaign, now: dt.datetime | None = None) -> dict:
    """What launching now would do: recipients by channel, skipped by reason, those of them whose SMS or
    WhatsApp waits for the end of the quiet hours, cost and ETA."""
    now = now or timezone.now()
    steps = list(campaign.channels.select_related("account", "template").order_by("position"))
    if not steps:
        raise PlanningError("Add at least one channel (account and template) to the campaign.")
    contacts = audience(campaign)
    queryset = _annotated(contacts, campaign, steps, now)
    plan = Plan()
    if campaign.channel_mode == ChannelMode.EVERY_CHANNEL:
        for index, step in enumerate(steps):
            plan.by_channel[step.account.channel] = plan.by_channel.get(step.account.channel, 0) + (
                queryset.filter(**{f"_reason_{index}": 0}).count()
            )
        rows = queryset.filter(_chosen=-1).order_by().values("_why").annotate(n=Count("id"))
        for row in rows:
            plan.skipped[REASONS[row["_why"]]] = row["n"]
        per_step = {i: queryset.filter(**{f"_reason_{i}": 0}).count() for i in range(len(steps))}
    else:
        per_step = {}
        for row in queryset.order_by().values("_chosen", "_why").annotate(n=Count("id")):
            if row["_chosen"] == -1:
                reason = REASONS[row["_why"]]
                plan.skipped[reason] = plan.skipped.get(reason, 0) + row["n"]
            else:
                step = steps[row["_chosen"]]
                plan.by_channel[step.account.channel] = plan.by_channel.get(step.account.channel, 0) + row["n"]
                per_step[row["_chosen"]] = per_step.get(row["_chosen"], 0) + row["n"]
    plan.targeted = (
        plan.queued + sum(plan.skipped.values())
        if campaign.channel_mode != ChannelMode.EVERY_CHANNEL
        else (queryset.count())
    )
    cost, eta = 0, dt.timedelta(0)
    per_account: dict[int, int] = {}
    for index, count in per_step.items():
        account = steps[index].account
        per_account[account.pk] = per_account.get(account.pk, 0) + count
        cost += count * float(expected_cost(campaign, steps[index]))
    accounts = {step.account.pk: step.account for step in steps}
    days = 0
    for account_id, count in per_account.items():
        eta = max(eta, estimate_duration(accounts[account_id], count, campaign.daily_cap))
        days = max(days, sending_days(accounts[account_id], count, campaign.daily_cap))
    return {
        "targeted": plan.targeted,
        "recipients_by_channel": plan.by_channel,
        "skipped_by_reason": {str(k): v for k, v in plan.skipped.items()},
        "deferred_by_quiet_hours": _deferred_by_quiet_hours(contacts, queryset, campaign, steps, now),
        "estimated_cost": round(cost, 4),
        "currency": steps[0].account.currency if steps else "",
        "eta_seconds": int(eta.total_seconds()),
        "eta_days": days,
        "warnings": _warnings(campaign, steps),
    }


def _warnings(campaign: Campaign, steps: list) -> list[str]:
    """What would launch but fail or surprise: WhatsApp free text outside a conversation."""
    found = []
    for position, step in enumerate(steps, start=1):
        if step.account.channel != "whatsapp":
            continue
        templates = [step.template, *(v.template for v in campaign.variants.all() if v.template_id)]
        for template in templates:
            for content in template.contents.all():
                if content.whatsapp_text and not content.whatsapp_content_sid:
                    found.append(
                        f"WhatsApp step {position}: template {template.name!r} ({content.locale}) has only free "
                        "text, which reaches only contacts who wrote to you in the last 24 hours; the others "
                        "fail (Twilio 63016). Add an approved Content template (HX…) for a campaign."
                    )
    return found


def _deferred_by_quiet_hours(contacts, queryset, campaign: Campaign, steps: list, now: dt.datetime) -> dict:
    """Per SMS/WhatsApp channel, the recipients whose send time falls inside the brand's quiet hours:
    they are still recipients, planned for the end of the quiet hours. ``_send_times`` tells, per
    contact time zone, whether the planned moment moves; the recipients chosen on a quiet step in
    the zones where it does are counted (``queryset``: ``contacts`` annotated as the plan is)."""
    quiet_steps = [index for index, step in enumerate(steps) if step.account.channel in QUIET_CHANNELS]
    brand = campaign.brand
    if not quiet_steps or brand.quiet_hours_start is None or brand.quiet_hours_end is None:
        return {}
    times = _send_times(contacts, campaign, Send(campaign=campaign, occurrence="once"), now)
    zones = [zone for zone, (moment, moved) in times.items() if moved != moment]
    if not zones:
        return {}
    in_zones = queryset.filter(time_zone__in=zones)
    if campaign.channel_mode == ChannelMode.EVERY_CHANNEL:
        counts = [(index, in_zones.filter(**{f"_reason_{index}": 0}).count()) for index in quiet_steps]
    else:
        rows = in_zones.filter(_chosen__in=quiet_steps).order_by().values("_chosen").annotate(n=Count("id"))
        counts = [(row["_chosen"], row["n"]) for row in rows]
    deferred: dict[str, int] = {}
    for index, n in counts:
        if n:
            channel = steps[index].account.channel
            deferred[channel] = deferred.get(channel, 0) + n
    return deferred


def expected_cost(campaign: Campaign, step) -> Decimal:
    """What one message of ``step`` is reckoned to cost before it is sent: the account's price, times
    the segments of the longest SMS among the step's templates (the variants' own included) in any
    locale, as ``sms_estimate_text`` counts them; the sender records the exact cost once sent."""
    price = Decimal(step.account.cost_per_message or 0)
    if step.account.channel != "sms" or not price:
        return price
    templates = [step.template, *(v.template for v in campaign.variants.all() if v.template_id)]
    segments = [
        sms_segments(sms_estimate_text(content.sms_text, brand=campaign.brand))[1]
        for template in templates
        if template is not None
        for content in template.contents.all()
        if content.sms_text
    ]
    return price * max(segments, default=1)


def sending_days(account, count: int, daily_cap: int | None = None) -> int:
    """On how many days messages go out: the first day counts, so 10,000 at 250 a day is 40."""
    if count <= 0:
        return 0
    quotas = [q for q in (account.daily_quota, daily_cap) if q]
    if quotas:
        return -(-count // min(quotas))
    return max(1, -(-int(estimate_duration(account, count).total_seconds()) // 86400))


def estimate_duration(account, count: int, daily_cap: int | None = None) -> dt.timedelta:
    """How long ``count`` messages take through ``account``: its per-second rate and daily quota."""
    if count <= 0:
        return dt.timedelta(0)
    per_day = [q for q in (account.daily_quota, daily_cap) if q]
    rate = float(account.rate_per_second or 0) or None
    if per_day:
        quota = min(per_day)
        full_days, rest = divmod(count, quota)
        if rest == 0:
            full_days, rest = full_days - 1, quota
        return dt.timedelta(days=full_days) + dt.timedelta(seconds=rest / rate if rate else 0)
    return dt.timedelta(seconds=count / rate) if rate else dt.timedelta(0)
