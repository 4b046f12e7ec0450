"""The campaign lifecycle: a state machine whose every transition is recorded with who and when.

    draft → scheduled → running ⇄ paused → completed;  cancelled from any non-final state.

Launching plans the recipients (now, or when the scheduled time comes; one send per occurrence for
recurring campaigns, driven by a django-celery-beat PeriodicTask); pausing stops new claims at the
next dispatcher tick; cancelling marks everything still pending as cancelled; a campaign completes
when none of its messages is pending, queued or being sent.
"""

import datetime as dt
import json
import logging

from django.db import connection, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from .models import (
    FINAL_STATUSES,
    OPEN_STATUSES,
    Campaign,
    CampaignStatus,
    CampaignTransition,
    Message,
    MessageStatus,
    ScheduleKind,
    Send,
    Variant,
)
from .planner import PlanningError, plan_send, plan_send_in_ranges, plannable_steps

log = logging.getLogger(__name__)

S = CampaignStatus
ALLOWED = {
    S.DRAFT: {S.SCHEDULED, S.RUNNING, S.CANCELLED},
    S.SCHEDULED: {S.RUNNING, S.PAUSED, S.CANCELLED},
    S.RUNNING: {S.PAUSED, S.COMPLETED, S.CANCELLED, S.SCHEDULED},
    S.PAUSED: {S.RUNNING, S.SCHEDULED, S.CANCELLED},
    S.COMPLETED: set(),
    S.CANCELLED: set(),
}


class IllegalTransition(ValueError):
    pass


# Campaigns that may still send: deleting one would take its messages (history and those in flight)
# with it while the dispatcher and senders work on them. Cancel first; a final one is a record that
# its owner may choose to drop, and a draft has nothing yet.
LIVE_STATUSES = (S.SCHEDULED, S.RUNNING, S.PAUSED)


class DeletionRefused(ValueError):
    pass


def deletion_refused(campaign: Campaign) -> str:
    """Why ``campaign`` cannot be deleted now; empty when it can."""
    if campaign.status in LIVE_STATUSES:
        return (
            f"A {campaign.get_status_display().lower()} campaign cannot be deleted: cancel it first "
            "(drafts, completed and cancelled campaigns can be deleted)."
        )
    return ""


def delete(campaign: Campaign) -> None:
    """Delete ``campaign`` with its messages and history, or raise DeletionRefused while it is live.

    Under the row lock every transition takes, so a launch cannot slip in between check and delete.
    """
    with transaction.atomic():
        current = Campaign.objects.select_for_update().get(pk=campaign.pk)
        reason = deletion_refused(current)
        if reason:
            raise DeletionRefused(reason)
        current.delete()


def transition(campaign: Campaign, to: str, actor: str = "", note: str = "") -> Campaign:
    """Move ``campaign`` to ``to`` under a row lock, or raise IllegalTransition saying why not."""
    with transaction.atomic():
        current = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if to not in ALLOWED[current.status]:
            allowed = ", ".join(sorted(ALLOWED[current.status])) or "nothing (it is final)"
            raise IllegalTransition(
                f"A {current.get_status_display().lower()} campaign cannot become {to}; it can become {allowed}."
            )
        CampaignTransition.objects.create(
            campaign=current, from_status=current.status, to_status=to, actor=actor[:150], note=note[:255]
        )
        current.status = to
        fields = ["status", "updated_at"]
        if to == S.RUNNING and current.launched_at is None:
            current.launched_at = timezone.now()
            fields.append("launched_at")
        if to == S.COMPLETED:
            current.completed_at = timezone.now()
            fields.append("completed_at")
        current.save(update_fields=fields)
    campaign.status, campaign.launched_at, campaign.completed_at = (
        current.status,
        current.launched_at,
        current.completed_at,
    )
    return campaign


def _kick() -> None:
    transaction.on_commit(_dispatch_now)


def launch(campaign: Campaign, actor: str = "", now: dt.datetime | None = None) -> Campaign:
    """Validate, then plan now (or schedule the plan). Raises PlanningError / IllegalTransition."""
    now = now or timezone.now()
    if campaign.status != S.DRAFT:
        raise IllegalTransition(f"Only a draft can be launched; this campaign is {campaign.status}.")
    campaign.full_clean()
    if not campaign.channels.exists():
        raise PlanningError("Add at least one channel (account and template) to the campaign.")
    if not (campaign.segments.exists() or campaign.lists.exists()):
        raise PlanningError("Choose at least one segment or list as the audience.")
    if campaign.schedule_kind == ScheduleKind.RECURRING:
        transition(campaign, S.SCHEDULED, actor, f"recurring: {campaign.crontab}")
        _install_recurrence(campaign)
        return campaign
    if campaign.schedule_kind == ScheduleKind.AT and campaign.scheduled_at and campaign.scheduled_at > now:
        return transition(campaign, S.SCHEDULED, actor, f"at {campaign.scheduled_at.isoformat()}")
    return start_send(campaign, "once", actor, now)


def start_send(campaign: Campaign, occurrence: str, actor: str = "", now: dt.datetime | None = None) -> Campaign:
    """Plan one occurrence and run it. Idempotent per occurrence (the Send is unique).

    On PostgreSQL outside a transaction a new send is planned in ranges of contacts, each committed
    and followed by a kick, so that the first messages go out while the rest is being planned (the
    campaign is running from the first range on and completes only once its plan is whole). Inside a
    transaction, and on SQLite, the plan is one transaction with the transition, as before.
    """
    now = now or timezone.now()
    phase = "test" if campaign.ab_test_share and occurrence == "once" else "all"
    contact_filter = _test_share_filter(campaign) if phase == "test" else None
    in_ranges = connection.vendor == "postgresql" and not connection.in_atomic_block
    with transaction.atomic():
        send, created = Send.objects.get_or_create(campaign=campaign, occurrence=occurrence, phase=phase)
        in_ranges = in_ranges and send.planned_at is None
        if in_ranges:
            plannable_steps(campaign)  # a PlanningError leaves nothing behind: no send, no transition
        else:
            plan_send(send, now, contact_filter=contact_filter, partly_planned=not created)
        if campaign.status != S.RUNNING:
            transition(campaign, S.RUNNING, actor, f"send {occurrence}")
        if not in_ranges:
            _kick()
    if in_ranges:
        plan_send_in_ranges(send, now, contact_filter=contact_filter, resume=not created, after_range=_dispatch_now)
    return campaign


def resume_plans() -> int:
    """Beat: finish the plans in ranges whose planner stopped half-way (its process died): a send
    without ``planned_at`` of a running or paused campaign that no planner holds. Returns how many."""
    if connection.vendor != "postgresql":
        return 0
    resumed = 0
    unplanned = Send.objects.filter(planned_at__isnull=True, campaign__status__in=[S.RUNNING, S.PAUSED])
    for send in unplanned.select_related("campaign"):
        contact_filter = _test_share_filter(send.campaign) if send.phase == "test" else None
        try:
            plan = plan_send_in_ranges(send, contact_filter=contact_filter, resume=True, after_range=_dispatch_now)
        except PlanningError:
            log.exception("cannot resume the plan of send %s", send.pk)
            continue
        resumed += plan is not None
    return resumed


def _dispatch_now() -> None:
    from .tasks import dispatch

    dispatch.apply_async(queue="default")


def _test_share_filter(campaign: Campaign) -> Q:
    """The test share: a deterministic slice of contacts (a different hash than the variant's)."""
    from django.db.models import F, Value
    from django.db.models.functions import Mod

    ids = campaign.brand.contacts.annotate(_slice=Mod(F("id") * 40503 + campaign.pk * 2654435761, Value(100)))
    return Q(pk__in=ids.filter(_slice__lt=campaign.ab_test_share).values("pk"))


def send_to_rest(campaign: Campaign, winner: Variant, actor: str = "") -> Campaign:
    """The hook for A/B tests with a test share: the rest of the audience gets the winner.

    Analytics picks the winner (significance); this only records it and plans the rest.
    """
    if winner.campaign_id != campaign.pk:
        raise PlanningError("The winner must be a variant of this campaign.")
    with transaction.atomic():
        Variant.objects.filter(campaign=campaign).update(is_winner=False)
        Variant.objects.filter(pk=winner.pk).update(is_winner=True)
        Variant.objects.filter(campaign=campaign).exclude(pk=winner.pk).update(weight=0)
        winner.weight = 100
        winner.save(update_fields=["weight"])
        tested = Message.objects.filter(campaign=campaign, send__phase="test").values("contact_id")
        send, _ = Send.objects.get_or_create(campaign=campaign, occurrence="once", phase="rest")
        plan_send(send, contact_filter=~Q(pk__in=tested))
        if campaign.status in (S.COMPLETED,):
            raise IllegalTransition("The campaign already completed.")
        if campaign.status != S.RUNNING:
            transition(campaign, S.RUNNING, actor, f"A/B winner {winner.name}: the rest")
        _kick()
    return campaign


def pause(campaign: Campaign, actor: str = "") -> Campaign:
    transition(campaign, S.PAUSED, actor)
    _set_recurrence_enabled(campaign, False)
    return campaign


def resume(campaign: Campaign, actor: str = "") -> Campaign:
    open_messages = Message.objects.filter(campaign=campaign, status__in=OPEN_STATUSES).exists()
    recurring = campaign.schedule_kind == ScheduleKind.RECURRING
    scheduled_later = campaign.schedule_kind == ScheduleKind.AT and not campaign.sends.exists()
    target = S.RUNNING if open_messages or not (recurring or scheduled_later) else S.SCHEDULED
    transition(campaign, target, actor, "resumed")
    _set_recurrence_enabled(campaign, True)
    if target == S.RUNNING:
        _kick()
        complete_if_done(campaign)
    return campaign


def cancel(campaign: Campaign, actor: str = "") -> int:
    """Cancel the campaign; returns how many pending or queued messages were cancelled.

    Queued ones too: the sender sends only what it moves from queued to sending itself, so a queued
    message cancelled here is never sent. Those being sent finish; a sender's retry or failover
    written after this commits is cancelled or not planned (``sender._write_outcomes``), and beat's
    ``dispatcher.reconcile`` sweeps whatever a race still leaves pending.
    """
    with transaction.atomic():
        transition(campaign, S.CANCELLED, actor)
        cancelled = Message.objects.filter(
            campaign=campaign, status__in=[MessageStatus.PENDING, MessageStatus.QUEUED]
        ).update(status=MessageStatus.CANCELLED, updated_at=timezone.now())
        _remove_recurrence(campaign)
    return cancelled


def complete_if_done(campaign: Campaign) -> bool:
    """Running campaigns with nothing left open complete (recurring ones wait for the next run)."""
    if campaign.status != S.RUNNING:
        return False
    if Message.objects.filter(campaign=campaign, status__in=OPEN_STATUSES).exists():
        return False
    if campaign.sends.filter(planned_at__isnull=True).exists():
        return False  # a plan in ranges still being written (or to be resumed by the tick)
    if campaign.ab_test_share and not campaign.sends.filter(phase="rest").exists():
        return False  # waiting for the winner
    if campaign.schedule_kind == ScheduleKind.RECURRING:
        transition(campaign, S.SCHEDULED, "system", "occurrence finished")
        return False
    try:
        transition(campaign, S.COMPLETED, "system", "nothing left to send")
    except IllegalTransition:
        return False
    return True


def duplicate(campaign: Campaign, actor: str = "") -> Campaign:
    """A draft copy with the same audience, channels and variants."""
    with transaction.atomic():
        copy = Campaign.objects.get(pk=campaign.pk)
        copy.pk = None
        copy.name = f"{campaign.name} (copy)"[:150]
        copy.status = S.DRAFT
        copy.launched_at = copy.completed_at = None
        copy.save()
        for name in ("segments", "lists", "exclude_segments", "exclude_lists"):
            getattr(copy, name).set(getattr(campaign, name).all())
        for step in campaign.channels.all():
            step.pk, step.campaign = None, copy
            step.save()
        for variant in campaign.variants.all():
            variant.pk, variant.campaign, variant.is_winner = None, copy, False
            variant.save()
    return copy


def progress(campaign: Campaign) -> dict:
    """Counts by status and skip reason, per channel, and an ETA from the accounts' limits."""
    from .planner import estimate_duration

    rows = Message.objects.filter(campaign=campaign).order_by().values("status", "skip_reason", "channel")
    counts = rows.annotate(n=Count("id"))
    by_status: dict[str, int] = {}
    skipped: dict[str, int] = {}
    by_channel: dict[str, dict[str, int]] = {}
    for row in counts:
        by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
        if row["status"] == MessageStatus.SKIPPED:
            skipped[row["skip_reason"]] = skipped.get(row["skip_reason"], 0) + row["n"]
        elif row["channel"]:
            channel = by_channel.setdefault(row["channel"], {})
            channel[row["status"]] = channel.get(row["status"], 0) + row["n"]
    total = sum(by_status.values())
    open_count = sum(by_status.get(s, 0) for s in OPEN_STATUSES)
    done = total - open_count
    eta = dt.timedelta(0)
    pending_by_account = (
        Message.objects.filter(campaign=campaign, status__in=OPEN_STATUSES)
        .order_by()
        .values("account")
        .annotate(n=Count("id"))
    )
    from channels.models import ChannelAccount

    for row in pending_by_account:
        if row["account"]:
            account = ChannelAccount.objects.get(pk=row["account"])
            eta = max(eta, estimate_duration(account, row["n"], campaign.daily_cap))
    # Provider errors of messages that failed or wait for a retry, latest first: what is going wrong now.
    errors = (
        Message.objects.filter(campaign=campaign, status__in=[MessageStatus.FAILED, MessageStatus.PENDING])
        .exclude(error_code="")
        .order_by()
        .values("account__provider", "error_code")
        .annotate(n=Count("id"), last=Max("updated_at"))
        .order_by("-last")[:10]
    )
    return {
        "status": campaign.status,
        "total": total,
        "done": done,
        "percent": round(100 * done / total, 1) if total else (100.0 if campaign.status in FINAL_STATUSES else 0.0),
        "by_status": by_status,
        "skipped_by_reason": skipped,
        "by_channel": by_channel,
        "eta_seconds": int(eta.total_seconds()) if open_count else 0,
        "recent_errors": [
            {"provider": e["account__provider"], "code": e["error_code"], "count": e["n"], "last_seen": e["last"]}
            for e in errors
        ],
    }


# -- recurrence through django-celery-beat ------------------------------------------------------------------
def _task_name(campaign: Campaign) -> str:
    return f"campaign:{campaign.pk}"


def _install_recurrence(campaign: Campaign) -> None:
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    minute, hour, day_of_month, month, day_of_week = campaign.crontab.split()
    schedule, _ = CrontabSchedule.objects.get_or_create(
        minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month, day_of_week=day_of_week,
        timezone="UTC",
    )  # fmt: skip
    PeriodicTask.objects.update_or_create(
        name=_task_name(campaign),
        defaults={
            "task": "campaigns.tasks.run_occurrence",
            "crontab": schedule,
            "args": json.dumps([campaign.pk]),
            "enabled": True,
        },
    )


def _set_recurrence_enabled(campaign: Campaign, enabled: bool) -> None:
    from django_celery_beat.models import PeriodicTask

    for task in PeriodicTask.objects.filter(name=_task_name(campaign)):
        task.enabled = enabled
        task.save(update_fields=["enabled"])


def _remove_recurrence(campaign: Campaign) -> None:
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.filter(name=_task_name(campaign)).delete()


def start_due(now: dt.datetime | None = None) -> int:
    """Beat: scheduled one-off campaigns whose time has come are planned and started."""
    now = now or timezone.now()
    started = 0
    due = Campaign.objects.filter(status=S.SCHEDULED, schedule_kind=ScheduleKind.AT, scheduled_at__lte=now)
    for campaign in due:
        start_send(campaign, "once", "system", now)
        started += 1
    return started
