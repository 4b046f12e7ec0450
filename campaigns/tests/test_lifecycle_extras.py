"""Recurring sends through django-celery-beat, the A/B test-share hook, caps, engagement segments, the API."""

import datetime as dt

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from audiences.models import Contact, Segment
from audiences.services import segment_members
from campaigns import services
from campaigns.models import Message, Send, Variant
from campaigns.tasks import run_occurrence
from campaigns.tests.factories import account, campaign, contacts, template, update_plans
from channels.models import ProviderEvent


@pytest.fixture
def base(brand_a):
    contact_list, people = contacts(brand_a, 40, consent=("email",))
    return contact_list, people, account(brand_a, "email"), template(brand_a)


def test_recurring_campaign_installs_a_crontab_and_sends_once_per_occurrence(
    brand_a, base, django_capture_on_commit_callbacks
):
    contact_list, _, email, offer = base
    weekly = campaign(brand_a, contact_list, [(email, offer)], schedule_kind="recurring", crontab="0 9 * * 1")
    services.launch(weekly, "test")
    task = PeriodicTask.objects.get(name=f"campaign:{weekly.pk}")
    assert (task.task, task.crontab.hour, task.crontab.day_of_week, task.enabled) == (
        "campaigns.tasks.run_occurrence", "9", "1", True,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=False):
        run_occurrence(weekly.pk)
        run_occurrence(weekly.pk)  # the same minute twice (overlapping beats): one send, one message each
    assert Send.objects.filter(campaign=weekly).count() == 1
    assert Message.objects.filter(campaign=weekly).count() == 40
    services.pause(weekly, "test")
    assert not PeriodicTask.objects.get(name=f"campaign:{weekly.pk}").enabled
    services.cancel(weekly, "test")
    assert not PeriodicTask.objects.filter(name=f"campaign:{weekly.pk}").exists()


def test_each_occurrence_of_a_recurring_campaign_is_a_send_of_its_own(
    brand_a, base, monkeypatch, django_capture_on_commit_callbacks
):
    """Week after week: a new send each occurrence, every contact once per send, and between runs the
    campaign waits as scheduled (not completed), each move recorded with who made it."""
    contact_list, _, email, offer = base
    weekly = campaign(brand_a, contact_list, [(email, offer)], schedule_kind="recurring", crontab="0 9 * * 1")
    services.launch(weekly, "marketer@a")
    monday = dt.datetime(2026, 11, 2, 9, 0, 7, tzinfo=dt.UTC)
    for week in range(2):
        monkeypatch.setattr(timezone, "now", lambda week=week: monday + dt.timedelta(weeks=week))
        with django_capture_on_commit_callbacks(execute=False):
            run_occurrence(weekly.pk)
        weekly.refresh_from_db()
        assert weekly.status == "running"
        Message.objects.filter(campaign=weekly).update(status="sent")
        assert not services.complete_if_done(weekly)  # a recurring campaign waits for its next run
        weekly.refresh_from_db()
        assert weekly.status == "scheduled"
    sends = list(Send.objects.filter(campaign=weekly).order_by("occurrence").values_list("occurrence", flat=True))
    assert sends == ["2026-11-02T09:00:00+00:00", "2026-11-09T09:00:00+00:00"]
    assert Message.objects.filter(campaign=weekly).count() == 80
    assert Message.objects.filter(campaign=weekly).values("contact", "send").distinct().count() == 80
    moves = list(weekly.transitions.order_by("id").values_list("from_status", "to_status", "actor"))
    assert moves == [
        ("draft", "scheduled", "marketer@a"),
        ("scheduled", "running", "beat"), ("running", "scheduled", "system"),
        ("scheduled", "running", "beat"), ("running", "scheduled", "system"),
    ]  # fmt: skip


def test_ab_test_share_goes_first_and_the_rest_gets_the_winner(brand_a, base, django_capture_on_commit_callbacks):
    contact_list, _, email, offer = base
    spring = campaign(brand_a, contact_list, [(email, offer)], ab_test_share=25)
    a = Variant.objects.create(campaign=spring, name="A", weight=50)
    Variant.objects.create(campaign=spring, name="B", weight=50)
    with django_capture_on_commit_callbacks(execute=False):
        services.launch(spring, "test")
        tested = Message.objects.filter(campaign=spring).count()
        assert 0 < tested < 40
        Message.objects.filter(campaign=spring).update(status="sent")
        assert not services.complete_if_done(spring)  # waiting for a winner
        services.send_to_rest(spring, a, "analyst")
    rest = Message.objects.filter(send__phase="rest")
    assert rest.count() == 40 - tested and set(rest.values_list("variant__name", flat=True)) == {"A"}
    assert Message.objects.filter(campaign=spring).values("contact").distinct().count() == 40


def test_engagement_conditions_registered_by_campaigns(brand_a, base):
    _, people, email, _ = base
    opened = Message.objects.create(brand=brand_a, contact=people[0], channel="email", account=email, status="sent")
    ProviderEvent.objects.create(account=email, brand=brand_a, provider="sendgrid", channel="email", event_type="opened",
                                 provider_event_id="ev1", message_id=str(opened.pk), occurred_at=timezone.now())  # fmt: skip
    rules = {"field": "engagement.opened", "op": "within_last_days", "value": 90}
    engaged = Segment(brand=brand_a, rules=rules)
    assert list(segment_members(engaged)) == [people[0]]
    lapsed = Segment(brand=brand_a, rules={**rules, "op": "not_within_last_days"})
    assert segment_members(lapsed).count() == 39


def test_campaign_api_dry_run_launch_progress_and_illegal_transition(
    key_client, brand_a, base, django_capture_on_commit_callbacks
):
    contact_list, _, email, offer = base
    body = {"name": "API spring", "lists": [contact_list.pk], "channels": [{"account": email.pk, "template": offer.pk}]}
    created = key_client.post("/api/campaigns/", body, format="json")
    assert created.status_code == 201, created.json()
    url = f"/api/campaigns/{created.json()['id']}/"
    dry = key_client.post(url + "dry-run/").json()
    assert dry["targeted"] == 40 and dry["recipients_by_channel"] == {"email": 40}
    assert key_client.post(url + "pause/").status_code == 409
    with django_capture_on_commit_callbacks(execute=False):
        assert key_client.post(url + "launch/").json()["status"] == "running"
    progress = key_client.get(url + "progress/").json()
    assert progress["total"] == 40 and progress["by_status"] == {"pending": 40}
    refused = key_client.patch(url, {"name": "renamed"}, format="json")
    assert refused.status_code == 400 and "status" in refused.json()["error"]["fields"]


def test_daily_cap_limits_claims_per_day(brand_a, base, django_capture_on_commit_callbacks):
    from campaigns import dispatcher

    contact_list, _, email, offer = base
    capped = campaign(brand_a, contact_list, [(email, offer)], daily_cap=15)
    with django_capture_on_commit_callbacks(execute=False):
        services.launch(capped, "test")
    now = timezone.now()
    claimed: list[int] = []
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            dispatcher.dispatch(now=now, enqueue=lambda channel, ids: claimed.extend(ids))
        Message.objects.filter(pk__in=claimed).update(status="sent", sent_at=now)
    assert len(claimed) == 15
    with django_capture_on_commit_callbacks(execute=True):
        dispatcher.dispatch(now=now + dt.timedelta(days=1), enqueue=lambda channel, ids: claimed.extend(ids))
    assert len(claimed) == 30
    assert Contact.objects.count() == 40


def test_budget_cap_is_never_overshot_and_the_rest_is_skipped(brand_a, base, django_capture_on_commit_callbacks):
    from decimal import Decimal

    from campaigns import dispatcher

    contact_list, _, email, offer = base
    email.cost_per_message = Decimal("0.01")
    email.save()
    budgeted = campaign(brand_a, contact_list, [(email, offer)], budget_cap=Decimal("0.105"))
    with django_capture_on_commit_callbacks(execute=False):
        services.launch(budgeted, "test")
    now = timezone.now()
    claimed: list[int] = []
    with django_capture_on_commit_callbacks(execute=True):
        dispatcher.dispatch(now=now, enqueue=lambda channel, ids: claimed.extend(ids))
    assert len(claimed) == 10  # in flight, not yet costed: reckoned at the account's price
    with django_capture_on_commit_callbacks(execute=True):
        dispatcher.dispatch(now=now, enqueue=lambda channel, ids: claimed.extend(ids))
    assert len(claimed) == 10  # nothing more fits while those are in flight
    Message.objects.filter(pk__in=claimed).update(status="sent", sent_at=now, cost=Decimal("0.01"))
    with django_capture_on_commit_callbacks(execute=True):
        dispatcher.dispatch(now=now, enqueue=lambda channel, ids: claimed.extend(ids))
    assert len(claimed) == 10
    statuses = Message.objects.filter(campaign=budgeted).values_list("status", "skip_reason")
    assert sorted(set(statuses)) == [("sent", ""), ("skipped", "budget")]
    assert Message.objects.filter(campaign=budgeted, skip_reason="budget").count() == 30
    assert services.complete_if_done(budgeted)


def test_a_long_sms_is_reckoned_at_its_segments_by_the_budget_and_the_dry_run(
    brand_a, django_capture_on_commit_callbacks
):
    """An SMS is billed per segment: two-segment texts in flight use twice the budget of one-segment ones."""
    from decimal import Decimal

    from campaigns import dispatcher
    from campaigns.models import TemplateContent
    from campaigns.planner import dry_run

    contact_list, _ = contacts(brand_a, 40, consent=("sms",), list_name="SMS people")
    sms = account(brand_a, "sms")
    sms.cost_per_message = Decimal("0.01")
    sms.save()
    long_text = template(brand_a, name="Long")
    TemplateContent.objects.filter(template=long_text).update(
        sms_text="Hi {{ contact.first_name }}, " + "our spring sale starts today with twenty percent off " * 3
    )  # 174 characters with the variable at its counted width, 196 with the opt-out suffix: two segments
    budgeted = campaign(brand_a, contact_list, [(sms, long_text)], budget_cap=Decimal("0.105"))
    assert dry_run(budgeted)["estimated_cost"] == pytest.approx(40 * 0.02)
    with django_capture_on_commit_callbacks(execute=False):
        services.launch(budgeted, "test")
    claimed: list[int] = []
    with django_capture_on_commit_callbacks(execute=True):
        dispatcher.dispatch(now=timezone.now(), enqueue=lambda channel, ids: claimed.extend(ids))
    assert len(claimed) == 5  # 0.105 // 0.02, not 0.105 // 0.01


@pytest.mark.django_db
def test_the_reconciler_finds_stale_in_flight_messages_without_scanning_every_message():
    """Beat reconciles every minute; on a table of every message ever planned a scan would be minutes."""
    from django.db import connection

    from campaigns.dispatcher import reconcile

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL plans")
    with update_plans(lambda sql: "campaigns_message" in sql) as plans:
        reconcile()
    assert len(plans) == 3  # stale queued of stopped campaigns, the other stale queued, stale sending
    assert all("message_in_flight" in plan for plan in plans), plans
