"""Celery tasks of the core flow. Beat runs ``tick``; launches and transactional sends kick ``dispatch``."""

import time

from celery import shared_task
from django.core.cache import cache

from . import dispatcher, sender, services
from .models import Campaign, CampaignStatus

DISPATCH_WINDOW = 1.8  # seconds one dispatch task keeps claiming while work is due (beat runs every 2 s)
RATE_WINDOW = 6.0  # the same while its only work is waiting for rate windows: fewer hand-overs at low rates
DISPATCH_LOCK = "campaigns:dispatch-lock"
DISPATCH_AGAIN = "campaigns:dispatch-again"  # a dispatch asked for while another held the lock
BUSY_PAUSE = 0.05  # between rounds while claims go on (at least this long while a rate frees up)
MAX_SLEEP = 1.5  # the longest wait for a slow rate window (above 1 s: a window of a second ends within it)


@shared_task(name="campaigns.tasks.dispatch", ignore_result=True)
def dispatch() -> int:
    """Claim due messages within every account's limits for a short window; overlapping runs are safe.

    A window that ends with work still going (claims in its last round, or an account waiting for
    its rate to free up) hands over to the next dispatch at once instead of leaving the gap until
    beat's next tick: a rate-limited account stays saturated. A round that finds nothing to claim
    ends the task (no polling: beat's tick and every kick start the next one). A dispatch asked for
    while another holds the lock leaves a flag that the holder reads after letting go, so a kick
    that lands just as the holder finds nothing due is not lost until the next tick.
    """
    cache.set(DISPATCH_AGAIN, 1, timeout=60)  # before trying the lock: see the holder's finally
    if not cache.add(DISPATCH_LOCK, 1, timeout=10):
        return 0  # another dispatcher is claiming right now; SKIP LOCKED would make this one idle anyway
    cache.delete(DISPATCH_AGAIN)  # this run's first round sees everything committed before the flag
    busy = False
    try:
        total, started = 0, time.monotonic()
        while True:
            report: dict = {}
            queued = dispatcher.dispatch(report=report)
            total += queued
            busy = bool(queued or "free_in" in report)
            if not busy:
                return total
            rate_only = "free_in" in report and not report.get("again")
            left = started + (RATE_WINDOW if rate_only else DISPATCH_WINDOW) - time.monotonic()
            if left <= 0:
                return total
            if report.get("again") or (queued and "free_in" not in report):
                pause = BUSY_PAUSE
            else:  # sleep until the rate window has room (no polling meanwhile)
                pause = min(max(report["free_in"] + 0.005, BUSY_PAUSE), MAX_SLEEP)
            time.sleep(min(pause, left))
    finally:
        cache.delete(DISPATCH_LOCK)
        if cache.delete(DISPATCH_AGAIN) or busy:
            dispatch.apply_async(queue="default")


@shared_task(name="campaigns.tasks.send_batch", ignore_result=True, acks_late=False)
def send_batch(ids: list[int]) -> dict:
    """Send one claimed batch. Not acks_late: a task redelivered after a crash must not resend."""
    return sender.send_batch(ids)


@shared_task(name="campaigns.tasks.tick", ignore_result=True)
def tick() -> None:
    """Beat: start due scheduled campaigns, heal crashes (plans and sends), complete finished campaigns,
    dispatch."""
    services.start_due()
    services.resume_plans()
    dispatcher.reconcile()
    for campaign in Campaign.objects.filter(status=CampaignStatus.RUNNING):
        services.complete_if_done(campaign)
    if cache.get(DISPATCH_LOCK) is None:  # a dispatcher at work already sees every account each round
        dispatch.apply_async(queue="default")


@shared_task(name="campaigns.tasks.run_occurrence", ignore_result=True)
def run_occurrence(campaign_id: int) -> None:
    """django-celery-beat's crontab entry of a recurring campaign: one send per occurrence."""
    from django.utils import timezone

    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None or campaign.status not in (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING):
        return
    occurrence = timezone.now().replace(second=0, microsecond=0).isoformat()
    services.start_send(campaign, occurrence, "beat")
