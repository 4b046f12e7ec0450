"""Celery tasks of the core flow. Beat runs ``tick``; launches and transactional sends kick ``dispatch``."""

import time

from celery import shared_task
from django.core.cache import cache

from . import dispatcher, sender, services
from .models import Campaign, CampaignStatus

DISPATCH_WINDOW = 1.8  # seconds one dispatch task keeps claiming while work is due (beat runs every 2 s)
DISPATCH_LOCK = "campaigns:dispatch-lock"
BUSY_PAUSE = 0.05  # between rounds while claims go on (at least this long while a rate frees up)
IDLE_PAUSE = 0.25  # between rounds with nothing due


@shared_task(name="campaigns.tasks.dispatch", ignore_result=True)
def dispatch() -> int:
    """Claim due messages within every account's limits for a short window; overlapping runs are safe.

    A window that ends with work still going (claims in its last round, or an account waiting for
    its rate to free up) hands over to the next dispatch at once instead of leaving the gap until
    beat's next tick: a rate-limited account stays saturated.
    """
    if not cache.add(DISPATCH_LOCK, 1, timeout=10):
        return 0  # another dispatcher is claiming right now; SKIP LOCKED would make this one idle anyway
    busy = False
    try:
        total, deadline = 0, time.monotonic() + DISPATCH_WINDOW
        while True:
            report: dict = {}
            queued = dispatcher.dispatch(report=report)
            total += queued
            busy = bool(queued or "free_in" in report)
            left = deadline - time.monotonic()
            if left <= 0:
                return total
            if report.get("again") or (queued and "free_in" not in report):
                pause = BUSY_PAUSE
            elif "free_in" in report:  # sleep until the rate window has room (no polling meanwhile)
                pause = max(report["free_in"] + 0.005, BUSY_PAUSE)
            else:
                pause = IDLE_PAUSE
            time.sleep(min(pause, left))
    finally:
        cache.delete(DISPATCH_LOCK)
        if busy:
            dispatch.apply_async(queue="default")


@shared_task(name="campaigns.tasks.send_batch", ignore_result=True, acks_late=False)
def send_batch(ids: list[int]) -> dict:
    """Send one claimed batch. Not acks_late: a task redelivered after a crash must not resend."""
    return sender.send_batch(ids)


@shared_task(name="campaigns.tasks.tick", ignore_result=True)
def tick() -> None:
    """Beat: start due scheduled campaigns, heal crashes, complete finished campaigns, dispatch."""
    services.start_due()
    dispatcher.reconcile()
    for campaign in Campaign.objects.filter(status=CampaignStatus.RUNNING):
        services.complete_if_done(campaign)
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
