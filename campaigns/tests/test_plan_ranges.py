"""Launches planned in ranges of contact ids (PostgreSQL): sending starts while the rest is planned.

Each range is its own transaction, so these tests commit (transactional database). The dispatch
task itself is exercised against the real broker (Redis): only its queue length is read.
"""

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from campaigns import planner, services, tasks
from campaigns.models import Message, Send
from campaigns.tests.factories import account, campaign, contacts, template

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def small_ranges(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("plans in ranges are a PostgreSQL path")
    monkeypatch.setattr(planner, "PLAN_FIRST_RANGE", 10)


@pytest.fixture
def spring(brand_a):
    # Contacts outside the audience first: the first ranges of ids hold none of it.
    contacts(brand_a, 25, consent=("email",), list_name="Others", start=1000)
    contact_list, _ = contacts(brand_a, 100, consent=("email",))
    # 20 more without consent: skipped, and counted as targeted all the same.
    contacts(brand_a, 20, consent=(), start=100)
    return campaign(brand_a, contact_list, [(account(brand_a, "email"), template(brand_a))])


def _by_status(spring_campaign) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in Message.objects.filter(campaign=spring_campaign).values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def test_each_range_is_committed_and_kicked_before_the_next_and_the_send_is_planned_only_at_the_end(
    small_ranges, spring
):
    send = Send.objects.create(campaign=spring, occurrence="once")
    seen = []

    def after_range():
        seen.append((Message.objects.filter(send=send).count(), Send.objects.get(pk=send.pk).planned_at))

    plan = planner.plan_send_in_ranges(send, after_range=after_range)

    written = [count for count, _ in seen]
    assert len(written) >= 3 and written == sorted(written) and written[0] < 120 and written[-1] == 120
    assert all(planned_at is None for _, planned_at in seen)
    send.refresh_from_db()
    assert send.planned_at is not None and send.targeted == 120 == plan.targeted
    assert plan.by_channel == {"email": 100} and plan.skipped == {"no_consent": 20}
    assert _by_status(spring) == {"pending": 100, "skipped": 20}
    assert planner.plan_send_in_ranges(send) is None  # planned already: nothing more


def test_a_launch_in_ranges_adds_up_exactly_like_a_plan_in_one_statement(small_ranges, spring, brand_a):
    services.launch(spring, "test")
    spring.refresh_from_db()
    send = spring.sends.get()
    assert spring.status == "running" and send.planned_at is not None and send.targeted == 120
    assert _by_status(spring) == {"pending": 100, "skipped": 20}

    twin = campaign(
        brand_a, spring.lists.get(), [(spring.channels.get().account, template(brand_a, name="Twin"))], name="Twin"
    )
    single = planner.plan_send(Send.objects.create(campaign=twin, occurrence="once"))
    assert (single.targeted, single.by_channel, single.skipped) == (120, {"email": 100}, {"no_consent": 20})


def test_a_plan_whose_planner_died_is_not_completed_and_is_resumed_by_the_tick_without_duplicates(small_ranges, spring):
    send = Send.objects.create(campaign=spring, occurrence="once")
    services.transition(spring, "running", "test")

    def die_after_the_first_range_with_messages():
        if Message.objects.filter(send=send).exists():
            raise SystemExit("planner killed")

    with pytest.raises(SystemExit):
        planner.plan_send_in_ranges(send, after_range=die_after_the_first_range_with_messages)
    first = Message.objects.filter(send=send).count()
    assert 0 < first < 120
    Message.objects.filter(send=send).update(status="sent")  # what was planned went out meanwhile
    assert not services.complete_if_done(spring)  # the plan is not whole yet

    assert services.resume_plans() == 1
    send.refresh_from_db()
    assert send.planned_at is not None and send.targeted == 120
    assert Message.objects.filter(send=send).count() == 120
    assert Message.objects.filter(send=send).values("contact_id").distinct().count() == 120
    assert _by_status(spring) == {"sent": first, "pending": 100 - first, "skipped": 20}
    assert services.resume_plans() == 0


def test_a_campaign_cancelled_while_it_is_planned_gets_no_more_messages(small_ranges, spring):
    send = Send.objects.create(campaign=spring, occurrence="once")
    services.transition(spring, "running", "test")
    cancelled = []

    def cancel_after_the_first_range():
        if not cancelled and Message.objects.filter(send=send).exists():
            cancelled.append(services.cancel(spring, "test"))

    planner.plan_send_in_ranges(send, after_range=cancel_after_the_first_range)
    statuses = _by_status(spring)
    assert "pending" not in statuses and statuses.get("cancelled") == cancelled[0] > 0
    assert sum(statuses.values()) < 120
    send.refresh_from_db()
    assert send.planned_at is not None and send.targeted == sum(statuses.values())


def _broker_queue_length() -> int:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL).llen("default")


@pytest.fixture
def rounds(monkeypatch):
    """The dispatch task's rounds as they happen (the real dispatcher runs each); ``during`` runs
    inside a round, while the task holds its lock."""
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("reads the Redis broker's queue")
    cache.delete(tasks.DISPATCH_LOCK)
    cache.delete(tasks.DISPATCH_AGAIN)
    real, log = tasks.dispatcher.dispatch, {"count": 0, "during": None}

    def counted(**kwargs):
        log["count"] += 1
        during = log.pop("during", None)
        if during:
            during()
        return real(**kwargs)

    monkeypatch.setattr(tasks.dispatcher, "dispatch", counted)
    return log


def test_a_dispatch_with_nothing_due_ends_after_one_round_without_asking_for_another(brand_a, rounds):
    before = _broker_queue_length()
    assert tasks.dispatch() == 0
    assert rounds["count"] == 1  # no polling until the window ends
    assert _broker_queue_length() == before


def test_a_dispatch_asked_for_while_another_holds_the_lock_runs_once_the_holder_lets_go(brand_a, rounds):
    before = _broker_queue_length()
    rounds["during"] = tasks.dispatch  # a kick (say, a range of a plan just committed) mid-round
    assert tasks.dispatch() == 0
    assert rounds["count"] == 1  # the kicked one found the lock held and did not run a round
    assert _broker_queue_length() == before + 1  # the holder, letting go, asked for one more
