"""The dispatcher: per sender account, claim as many due messages as its limits allow right now.

Claims go across all running campaigns (and transactional messages) by priority, with
``SELECT … FOR UPDATE SKIP LOCKED`` so that overlapping ticks never claim a message twice. The
rate limiter decides how many (per-second rate, daily/rolling quota of unique recipients); the
claimed messages become ``queued`` and go, in batches, to a send task on the channel's queue.
A campaign larger than a day's quota simply stays pending until the quota frees up.
"""

import datetime as dt
import logging
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Sum
from django.utils import timezone

from channels import ratelimit
from channels.models import ChannelAccount
from channels.providers import ADAPTERS
from channels.ratelimit import local_day

from .models import Campaign, CampaignStatus, Message, MessageStatus, SkipReason
from .planner import expected_cost
from .sender import STOPPED, any_of, pk_in

log = logging.getLogger(__name__)
CLAIM_CHUNK = 1000  # upper bound per account per round...
LARGE_BATCH_CHUNKS = 4  # ...times this for providers that take 1,000 messages a batch (SendGrid)
SWEEP_HORIZON = dt.timedelta(days=1)  # how long after it stopped a campaign's leftovers are swept


def _due(now: dt.datetime):
    return Message.objects.filter(status=MessageStatus.PENDING, send_after__lte=now).filter(
        Q(campaign__isnull=True) | Q(campaign__status=CampaignStatus.RUNNING)
    )


def _campaign_allowance(now: dt.datetime) -> dict[int, int]:
    """Running campaigns with a daily cap or a budget: how many more they may claim now (0 = none)."""
    allowance: dict[int, int] = {}
    capped = Campaign.objects.filter(status=CampaignStatus.RUNNING).filter(
        Q(daily_cap__isnull=False) | Q(budget_cap__isnull=False)
    )
    for campaign in capped.select_related("brand"):
        left = CLAIM_CHUNK * 1000
        if campaign.daily_cap:
            day_start, day_end = local_day(now, campaign.brand.time_zone)
            claimed_today = (
                Message.objects.filter(campaign=campaign, queued_at__gte=day_start, queued_at__lt=day_end)
                .exclude(status__in=[MessageStatus.PENDING, MessageStatus.SKIPPED, MessageStatus.CANCELLED])
                .count()
            )
            left = min(left, max(campaign.daily_cap - claimed_today, 0))
        if campaign.budget_cap is not None:
            left = min(left, _budget_allowance(campaign, now))
        allowance[campaign.pk] = left
    return allowance


def _budget_allowance(campaign: Campaign, now: dt.datetime) -> int:
    """How many more messages fit the budget, counting those already claimed but not yet costed.

    A message's cost is known once sent (SMS: per segment); until then each is reckoned at the most
    expensive of the campaign's steps (an SMS at its template's segments: ``expected_cost``), so the
    cap is not overshot by a claim in flight. When nothing more fits and nothing is in flight, the
    rest is skipped as 'budget'.
    """
    steps = campaign.channels.select_related("account", "template").prefetch_related("template__contents")
    per_message = max([expected_cost(campaign, step) for step in steps], default=Decimal(0))
    messages = Message.objects.filter(campaign=campaign)
    spent = messages.aggregate(s=Sum("cost"))["s"] or Decimal(0)
    in_flight = messages.filter(status__in=[MessageStatus.QUEUED, MessageStatus.SENDING]).count()
    room = Decimal(campaign.budget_cap) - spent - in_flight * per_message
    if per_message > 0:
        left = max(int(room // per_message), 0)
    else:
        left = CLAIM_CHUNK * 1000 if room > 0 else 0
    if left == 0 and in_flight == 0:
        messages.filter(status=MessageStatus.PENDING).update(
            status=MessageStatus.SKIPPED, skip_reason=SkipReason.BUDGET, updated_at=now
        )
    return left


def dispatch(now: dt.datetime | None = None, enqueue=None, report: dict | None = None) -> int:
    """One round over every account with due messages. Returns how many messages were queued.

    ``enqueue(channel, ids)`` hands a batch to the sender (a Celery task by default); tests of the
    day-by-day quota pass a function that sends in-process. ``report["free_in"]`` is set when an
    account has due messages but its rate window is full (also when this round's claim filled it):
    the seconds until a slot frees; ``report["again"]`` when an account may have more due messages
    it could claim at once.
    """
    now = now or timezone.now()
    enqueue = enqueue or _enqueue_task
    allowance = _campaign_allowance(now)
    # Active accounts with a due message: one EXISTS per account stops at its first due row of the
    # partial index, where DISTINCT over the due messages read every one of them, every round.
    accounts = ChannelAccount.objects.filter(is_active=True).filter(Exists(_due(now).filter(account=OuterRef("pk"))))
    total = 0
    for account in accounts:
        total += _dispatch_account(account, now, allowance, enqueue, report)
    return total


def _dispatch_account(account: ChannelAccount, now: dt.datetime, allowance: dict[int, int], enqueue, report) -> int:
    size = getattr(ADAPTERS.get(account.provider), "max_batch_size", 100)
    # A round costs about as much again as the rows it claims (the account's look-up, the limiter, a
    # pause between rounds): with batches of 1,000 (SendGrid) one round claims several of them, or the
    # dispatcher, at ~1,000 rows a round, caps an unlimited account below what two senders can send.
    chunk = CLAIM_CHUNK * (LARGE_BATCH_CHUNKS if size >= 1000 else 1)
    capacity = min(ratelimit.capacity(account, now=now), chunk)
    if capacity <= 0:
        if report is not None:
            # At the clock the capacity was read at: a slot that freed since then is not "no rate
            # limit in the way" (the dispatch task would end and wait for beat's next tick).
            free_in = ratelimit.rate_free_in(account, now=now)
            if free_in is not None:  # the rate, not the quota, is what holds these messages back
                report["free_in"] = min(report.get("free_in", free_in), free_in)
        return 0
    batches: list[list[int]] = []
    with transaction.atomic():
        blocked = [pk for pk, left in allowance.items() if left <= 0]
        # Over-claim a little when there is a quota: a recipient already counted today costs no new
        # quota. Without one the rate alone decides, and capacity rows are what it can grant.
        limit = capacity * 2 if account.daily_quota is not None else capacity
        rows = list(claimable(account, now, blocked)[:limit])
        fetched = len(rows)
        rows = _within_allowance(rows, allowance)
        if not rows:
            return 0
        granted = set(ratelimit.acquire(account, [address or str(pk) for pk, address, _ in rows], now=now))
        chosen, seen = [], set()
        for pk, address, _ in rows:
            key = address or str(pk)
            if key in granted and key not in seen:
                chosen.append(pk)
                seen.add(key)
        if not chosen:
            return 0
        Message.objects.filter(pk_in(chosen)).update(status=MessageStatus.QUEUED, queued_at=now, updated_at=now)
        batches = [chosen[i : i + size] for i in range(0, len(chosen), size)]
        transaction.on_commit(lambda: [enqueue(account.channel, batch) for batch in batches])
    if report is not None and fetched >= limit:  # more may be due for this account right now
        free_in = ratelimit.rate_free_in(account) if capacity < chunk else None
        if free_in is None:
            report["again"] = True
        else:  # this claim filled the rate window: the next round is useful only once it frees
            report["free_in"] = min(report.get("free_in", free_in), free_in)
    return sum(len(b) for b in batches)


def claimable(account: ChannelAccount, now: dt.datetime, blocked: list[int]):
    """The account's due messages in the order they are claimed (priority, then first planned first),
    locked as they are read, skipping those another claim holds: (id, address, campaign id) rows.
    The index ``message_claim_order`` gives this order, so a claim reads the rows it takes, not every
    pending message of the account."""
    due = _due(now).filter(account=account).exclude(campaign_id__in=blocked)
    return (
        due.order_by("-priority", "id")
        .select_for_update(skip_locked=True, of=("self",))
        .values_list("id", "address", "campaign_id")
    )


def _within_allowance(rows: list, allowance: dict[int, int]) -> list:
    """Drop rows past their campaign's daily cap (the allowance is spent as rows are kept)."""
    kept = []
    for row in rows:
        campaign_id = row[2]
        if campaign_id in allowance:
            if allowance[campaign_id] <= 0:
                continue
            allowance[campaign_id] -= 1
        kept.append(row)
    return kept


def _enqueue_task(channel: str, ids: list[int]) -> None:
    from marketing_hub.celery import queue_for_channel

    from .tasks import send_batch

    send_batch.apply_async(args=[ids], queue=queue_for_channel(channel))


def reconcile(now: dt.datetime | None = None) -> dict[str, int]:
    """Heal what crashes and races leave behind, never by sending blindly.

    - pending or queued messages of a campaign cancelled or completed lately: cancelled (see
      ``sweep_stopped``);
    - queued too long (the send task was lost before it started): back to pending, safe because
      the sender only sends messages it moves from queued to sending itself; cancelled instead when
      their campaign has stopped, as nothing claims a stopped campaign's messages;
    - sending too long (the worker died during the provider call): 'unknown', unless a provider
      callback has settled it meanwhile. Never resent: the provider may have accepted it.
    """
    now = now or timezone.now()
    stale_queued = dt.timedelta(seconds=settings.SEND_STALE_QUEUED_SECONDS)
    stale_sending = dt.timedelta(seconds=settings.SEND_STALE_SENDING_SECONDS)
    cancelled = sweep_stopped(now)
    stale = Message.objects.filter(status=MessageStatus.QUEUED, queued_at__lt=now - stale_queued)
    cancelled += stale.filter(campaign__status__in=STOPPED).update(status=MessageStatus.CANCELLED, updated_at=now)
    requeued = stale.update(status=MessageStatus.PENDING, updated_at=now)
    unknown = Message.objects.filter(status=MessageStatus.SENDING, updated_at__lt=now - stale_sending).update(
        status=MessageStatus.UNKNOWN, error_message="worker lost during the provider call; not resent", updated_at=now
    )
    return {"cancelled": cancelled, "requeued": requeued, "unknown": unknown}


def sweep_stopped(now: dt.datetime) -> int:
    """Cancel what is still pending or queued in campaigns stopped (cancelled, completed) lately.

    A cancel cancels what is pending or queued when it commits. Work in flight then may still write a
    pending message afterwards (a stale claim requeued by ``reconcile`` in the same moment; the sender
    waits for the cancel instead, see ``sender._write_outcomes``), and nothing claims a stopped
    campaign's messages: it would stay pending for ever. Such writes come only from work in flight
    when the campaign stopped, so the campaigns stopped within ``SWEEP_HORIZON`` are enough; each
    costs a look-up in the (campaign, status) index, not a scan of every pending message, and the
    campaigns of years past are not read every tick.
    """
    stopped = list(
        Campaign.objects.filter(status__in=STOPPED, updated_at__gte=now - SWEEP_HORIZON).values_list("id", flat=True)
    )
    if not stopped:
        return 0
    return (
        Message.objects.filter(any_of(Message, "campaign", stopped))
        .filter(status__in=[MessageStatus.PENDING, MessageStatus.QUEUED])
        .update(status=MessageStatus.CANCELLED, updated_at=now)
    )
