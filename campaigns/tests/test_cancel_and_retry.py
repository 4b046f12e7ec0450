"""What a cancel leaves behind (nothing pending, ever), the retry rules, deleting campaigns, the daily cap's day.

Against the real sandbox, PostgreSQL and Redis, as in test_sending.py: the dispatcher and the sender
are the production ones, the hand-over between them a direct call, so the clock can be moved.
"""

import datetime as dt
import threading
import time

import pytest
from django.db import connections
from django.utils import timezone

from campaigns import dispatcher, sender, services
from campaigns.models import Campaign, Message
from campaigns.tests.factories import account, campaign, contacts, launched, send_inline, template, update_plans

pytestmark = pytest.mark.django_db(transaction=True)


def _statuses(campaign_obj) -> set[str]:
    return set(Message.objects.filter(campaign=campaign_obj).values_list("status", flat=True))


def _send_while_cancelling(spring) -> None:
    """Dispatch and send in a thread; cancel ``spring`` while its batch is at the provider (the
    sandbox answers after a second), so the outcome is written after the cancel committed."""
    done = threading.Event()

    def send():
        try:
            dispatcher.dispatch(enqueue=send_inline)
        finally:
            connections.close_all()
            done.set()

    worker = threading.Thread(target=send)
    worker.start()
    deadline = time.monotonic() + 10
    while not Message.objects.filter(campaign=spring, status="sending").exists():
        assert time.monotonic() < deadline, "the batch never reached the provider"
        time.sleep(0.02)
    services.cancel(spring, "test")
    worker.join(15)
    assert done.is_set()


# -- a cancelled campaign keeps nothing pending ---------------------------------------------------------------
def test_a_retry_written_after_the_campaign_was_cancelled_is_cancelled_not_left_pending(brand_a, sandbox):
    contact_list, _ = contacts(brand_a, 3, consent=("sms",))
    sms = account(brand_a, "sms", base_url=sandbox.url)
    spring = launched(campaign(brand_a, contact_list, [(sms, template(brand_a))]))
    sandbox.configure(rate_429=1.0, latency_ms=1000)
    _send_while_cancelling(spring)
    assert _statuses(spring) == {"cancelled"}
    assert Message.objects.filter(campaign=spring, attempts=1, error_code="20429").count() == 3


def test_no_failover_is_planned_for_a_campaign_cancelled_while_its_batch_was_at_the_provider(brand_a, sandbox):
    contact_list, people = contacts(brand_a, 2, consent=("sms", "email"))
    for index, person in enumerate(people):
        person.phone = f"+141555{index}0000"  # the sandbox's invalid numbers: a permanent failure
        person.save()
    sms = account(brand_a, "sms", base_url=sandbox.url)
    email = account(brand_a, "email", base_url=sandbox.url)
    offer = template(brand_a)
    spring = launched(campaign(brand_a, contact_list, [(sms, offer), (email, offer)], channel_mode="failover"))
    sandbox.configure(latency_ms=1000)
    _send_while_cancelling(spring)
    assert set(Message.objects.filter(campaign=spring).values_list("channel", "status")) == {("sms", "failed")}
    dispatcher.dispatch(enqueue=send_inline)
    assert sandbox.counts == {}


def test_a_retry_written_while_a_cancel_commits_waits_for_it_and_is_cancelled(brand_a, sandbox):
    """The race: the cancel's UPDATE passed the message while it was 'sending' and has not committed
    when the sender writes the retry. The sender waits for the cancel (the campaign's row lock) and
    then writes 'cancelled'; reading the campaign as still running, it wrote 'pending' for ever."""
    contact_list, _ = contacts(brand_a, 1, consent=("sms",))
    sms = account(brand_a, "sms", base_url=sandbox.url)
    spring = launched(campaign(brand_a, contact_list, [(sms, template(brand_a))]))
    ids = list(Message.objects.filter(campaign=spring).values_list("id", flat=True))
    Message.objects.filter(pk__in=ids).update(status="queued")
    (claimed,) = sender._claim(ids)  # now 'sending', at the provider
    cancelled, release, written = threading.Event(), threading.Event(), threading.Event()

    def cancel_and_hold():
        from django.db import transaction

        try:
            with transaction.atomic():
                assert services.cancel(spring, "test") == 0  # 'sending' is not pending
                cancelled.set()
                release.wait(10)
        finally:
            connections.close_all()

    def write_retry():
        try:
            now = timezone.now()
            claimed.attempts += 1
            claimed.status, claimed.error_code = "pending", "20429"
            claimed.send_after = now + dt.timedelta(seconds=sender.backoff(1, 1))
            sender._write_outcomes([claimed], now)
            written.set()
        finally:
            connections.close_all()

    canceller = threading.Thread(target=cancel_and_hold)
    canceller.start()
    assert cancelled.wait(10)
    writer = threading.Thread(target=write_retry)
    writer.start()
    waited = not written.wait(0.5)  # the retry waits for the cancel to commit
    release.set()
    canceller.join(10)
    writer.join(10)
    assert written.is_set() and waited
    assert Message.objects.get(pk=claimed.pk).status == "cancelled"


def test_reconcile_sweeps_what_races_left_pending_or_queued_in_stopped_campaigns(brand_a, sandbox, settings):
    contact_list, _ = contacts(brand_a, 6, consent=("sms",))
    sms = account(brand_a, "sms", base_url=sandbox.url)
    offer = template(brand_a)
    stopped = launched(campaign(brand_a, contact_list, [(sms, offer)], name="Stopped"))
    live = launched(campaign(brand_a, contact_list, [(sms, offer)], name="Live"))
    services.cancel(stopped, "test")
    now = timezone.now()
    stale = now - dt.timedelta(seconds=settings.SEND_STALE_QUEUED_SECONDS + 1)
    # What a race leaves behind a cancel: a requeued message, one queued long ago, one queued just now.
    left = list(Message.objects.filter(campaign=stopped).order_by("id").values_list("id", flat=True))
    Message.objects.filter(pk=left[0]).update(status="pending")
    Message.objects.filter(pk=left[1]).update(status="queued", queued_at=stale)
    Message.objects.filter(pk=left[2]).update(status="queued", queued_at=now)
    Message.objects.filter(campaign=live).update(status="queued", queued_at=stale)

    result = dispatcher.reconcile(now)

    assert _statuses(stopped) == {"cancelled"}
    assert _statuses(live) == {"pending"}  # a live campaign's stale claims are requeued, as before
    assert result == {"cancelled": 3, "requeued": 6, "unknown": 0}


def test_a_stale_queued_message_of_a_campaign_stopped_long_ago_is_cancelled_not_requeued(brand_a, settings):
    contact_list, _ = contacts(brand_a, 2, consent=("sms",))
    spring = launched(campaign(brand_a, contact_list, [(account(brand_a, "sms"), template(brand_a))]))
    services.cancel(spring, "test")
    long_ago = timezone.now() - dispatcher.SWEEP_HORIZON - dt.timedelta(hours=1)
    Campaign.objects.filter(pk=spring.pk).update(updated_at=long_ago)
    Message.objects.filter(campaign=spring).update(status="queued", queued_at=long_ago)
    assert dispatcher.reconcile()["cancelled"] == 2
    assert _statuses(spring) == {"cancelled"}


def test_the_sweep_looks_up_stopped_campaigns_in_the_campaign_status_index(brand_a):
    """Beat reconciles every tick: the sweep must not read every pending message of the hub."""
    contact_list, _ = contacts(brand_a, 3, consent=("sms",))
    spring = launched(campaign(brand_a, contact_list, [(account(brand_a, "sms"), template(brand_a))]))
    services.cancel(spring, "test")
    from django.db import transaction

    with transaction.atomic(), update_plans(lambda sql: '"campaign_id" = ANY' in sql) as plans:
        dispatcher.sweep_stopped(timezone.now())
    assert len(plans) == 1 and "message_campaign_status" in plans[0], plans


# -- the retry rules ----------------------------------------------------------------------------------------------
def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap_and_honours_retry_after():
    for attempt in range(1, 14):
        cap = min(sender.MAX_BACKOFF, sender.BASE_BACKOFF * 2 ** (attempt - 1))
        delays = [sender.backoff(attempt) for _ in range(400)]
        assert all(0 <= d <= cap for d in delays), attempt
        # Full jitter: spread over the whole range, not bunched at the cap (nor at 0).
        assert min(delays) < 0.1 * cap and max(delays) > 0.9 * cap, attempt
    assert sender.backoff(30) <= sender.MAX_BACKOFF
    # Retry-After is a floor: never earlier than the provider asked, jittered above it when the
    # backoff is longer.
    assert all(sender.backoff(1, retry_after=30) >= 30 for _ in range(200))
    later = [sender.backoff(8, retry_after=30) for _ in range(400)]
    assert min(later) >= 30 and max(later) > 200


def _due_retries(spring):
    return Message.objects.filter(campaign=spring, status="pending")


def test_a_429_is_retried_no_earlier_than_retry_after_then_fails_as_retries_exhausted_without_failover(
    brand_a, sandbox, settings
):
    settings.SEND_MAX_ATTEMPTS = 3
    sandbox.configure(rate_429=1.0, retry_after=30)
    contact_list, _ = contacts(brand_a, 2, consent=("sms", "email"))
    sms = account(brand_a, "sms", base_url=sandbox.url)
    email = account(brand_a, "email", base_url=sandbox.url)
    offer = template(brand_a)
    spring = launched(campaign(brand_a, contact_list, [(sms, offer), (email, offer)], channel_mode="failover"))
    clock = timezone.now()
    for attempt in (1, 2):
        assert dispatcher.dispatch(now=clock, enqueue=send_inline) == 2
        retries = list(_due_retries(spring).values("attempts", "error_code", "send_after", "updated_at"))
        assert [(r["attempts"], r["error_code"]) for r in retries] == [(attempt, "20429")] * 2
        # The retry waits at least what the provider's Retry-After asked for...
        assert all(r["send_after"] - r["updated_at"] >= dt.timedelta(seconds=30) for r in retries)
        # ...and is not claimed a moment before it is due.
        first_due = min(r["send_after"] for r in retries)
        assert dispatcher.dispatch(now=first_due - dt.timedelta(seconds=1), enqueue=send_inline) == 0
        clock = max(r["send_after"] for r in retries)
    assert dispatcher.dispatch(now=clock, enqueue=send_inline) == 2
    failed = list(Message.objects.filter(campaign=spring).values_list("channel", "status", "attempts", "error_code"))
    assert sorted(failed) == [("sms", "failed", 3, "20429")] * 2  # no email planned: transient is no failover
    assert all(
        m.startswith("retries exhausted: ") for m in Message.objects.filter(campaign=spring).values_list(
            "error_message", flat=True)
    )  # fmt: skip
    assert sandbox.counts == {}
    assert services.complete_if_done(spring)


def test_a_5xx_without_retry_after_backs_off_within_the_attempts_exponential_bound(brand_a, sandbox, settings):
    settings.SEND_MAX_ATTEMPTS = 20
    sandbox.configure(rate_5xx=1.0)
    contact_list, _ = contacts(brand_a, 20, consent=("sms",))
    spring = launched(campaign(brand_a, contact_list, [(account(brand_a, "sms", base_url=sandbox.url),
                                                       template(brand_a))]))  # fmt: skip
    clock = timezone.now()
    longest = []
    for attempt in range(1, 8):
        assert dispatcher.dispatch(now=clock, enqueue=send_inline) == 20
        delays = [
            (r["send_after"] - r["updated_at"]).total_seconds()
            for r in _due_retries(spring).values("send_after", "updated_at")
        ]
        bound = sender.BASE_BACKOFF * 2 ** (attempt - 1)
        assert len(delays) == 20 and all(0 <= d <= bound for d in delays), (attempt, delays)
        longest.append(max(delays))
        clock = max(clock, *_due_retries(spring).values_list("send_after", flat=True))  # all due again
    assert longest[-1] > 4 * longest[0]  # it grows: 20 draws up to 128 s against 20 up to 2 s
    assert set(_due_retries(spring).values_list("error_code", flat=True)) == {"20500"}


# -- no deleting a live campaign --------------------------------------------------------------------------------
def _one_of_each(brand_a):
    """A campaign in each status that deletion cares about: {status: campaign}."""
    contact_list, _ = contacts(brand_a, 3, consent=("sms",))
    sms, offer = account(brand_a, "sms"), template(brand_a)
    made = {}
    for status in ("draft", "scheduled", "running", "paused", "completed", "cancelled"):
        made[status] = campaign(brand_a, contact_list, [(sms, offer)], name=status.title())
        if status != "draft":
            launched(made[status])  # planned: its messages are what a delete would take with it
            Campaign.objects.filter(pk=made[status].pk).update(status=status)
    return made


def test_the_api_refuses_to_delete_a_live_campaign_and_deletes_the_others(key_client, brand_a):
    made = _one_of_each(brand_a)
    for status in ("scheduled", "running", "paused"):
        refused = key_client.delete(f"/api/campaigns/{made[status].pk}/")
        assert refused.status_code == 409, status
        error = refused.json()["error"]
        assert error["code"] == "conflict" and "cancel it first" in error["message"], error
        assert Message.objects.filter(campaign=made[status]).count() == 3
    for status in ("draft", "completed", "cancelled"):
        assert key_client.delete(f"/api/campaigns/{made[status].pk}/").status_code == 204, status
    assert set(Campaign.objects.values_list("status", flat=True)) == {"scheduled", "running", "paused"}
    assert not Message.objects.exclude(campaign__in=Campaign.objects.all()).exists()


def test_the_admin_has_no_delete_for_a_live_campaign_and_its_bulk_delete_skips_them(client, marketer_a, brand_a):
    made = _one_of_each(brand_a)
    client.force_login(marketer_a)
    running = made["running"]
    page = client.get(f"/admin/campaigns/campaign/{running.pk}/change/")
    assert page.status_code == 200 and f"/admin/campaigns/campaign/{running.pk}/delete/" not in page.content.decode()
    assert client.post(f"/admin/campaigns/campaign/{running.pk}/delete/", {"post": "yes"}).status_code == 403
    draft_page = client.get(f"/admin/campaigns/campaign/{made['draft'].pk}/change/").content.decode()
    assert f"/admin/campaigns/campaign/{made['draft'].pk}/delete/" in draft_page

    everything = [str(c.pk) for c in made.values()]
    confirm = client.post("/admin/campaigns/campaign/", {"action": "delete_selected", "_selected_action": everything})
    assert confirm.status_code == 200  # the confirmation page, for the three that may go
    text = confirm.content.decode()
    assert "cancel it first" in text and "Are you sure" in text
    assert {str(pk) for pk in confirm.context["queryset"].values_list("pk", flat=True)} == {
        str(made[s].pk) for s in ("draft", "completed", "cancelled")
    }
    done = client.post(
        "/admin/campaigns/campaign/", {"action": "delete_selected", "_selected_action": everything, "post": "yes"}
    )
    assert done.status_code == 302
    assert set(Campaign.objects.values_list("status", flat=True)) == {"scheduled", "running", "paused"}


# -- the daily cap counts the brand's day ----------------------------------------------------------------------
def test_the_daily_cap_counts_the_brands_local_day_as_the_quotas_do(brand_a):
    brand_a.time_zone = "America/New_York"  # UTC-5 in January
    brand_a.save()
    contact_list, _ = contacts(brand_a, 40, consent=("email",))
    capped = launched(campaign(brand_a, contact_list, [(account(brand_a, "email"), template(brand_a))], daily_cap=15))
    year = timezone.now().year + 1
    utc = dt.UTC
    claimed: list[int] = []

    def claim_at(moment) -> int:
        before = len(claimed)
        dispatcher.dispatch(now=moment, enqueue=lambda channel, ids: claimed.extend(ids))
        Message.objects.filter(pk__in=claimed).update(status="sent", sent_at=moment)
        return len(claimed) - before

    assert claim_at(dt.datetime(year, 1, 14, 23, 0, tzinfo=utc)) == 15  # 18:00 on the 14th in New York
    assert claim_at(dt.datetime(year, 1, 15, 1, 0, tzinfo=utc)) == 0  # a new UTC day, still the 14th there
    assert claim_at(dt.datetime(year, 1, 15, 4, 59, tzinfo=utc)) == 0  # 23:59 there
    assert claim_at(dt.datetime(year, 1, 15, 5, 1, tzinfo=utc)) == 15  # 00:01 on the 15th there
    assert Message.objects.filter(campaign=capped, status="pending").count() == 10


def test_a_local_day_is_23_or_25_hours_long_when_the_clocks_change():
    spring_forward = dt.datetime(2026, 3, 8, 12, 0, tzinfo=dt.UTC)
    start, end = dispatcher.local_day(spring_forward, "America/New_York")
    assert (start.isoformat(), end - start) == ("2026-03-08T05:00:00+00:00", dt.timedelta(hours=23))
    start, end = dispatcher.local_day(dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC), "America/New_York")
    assert end - start == dt.timedelta(hours=25)
    assert dispatcher.local_day(spring_forward, "")[0] == dt.datetime(2026, 3, 8, tzinfo=dt.UTC)
