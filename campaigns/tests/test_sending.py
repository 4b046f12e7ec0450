"""Sending scenarios in-process against the sandbox: quotas day by day, priorities, STOP, injected errors.

The dispatcher and sender are the production ones; only the hand-over from dispatcher to sender is
a direct call instead of a Celery task (the real-worker scenarios are in test_e2e.py), so the clock
can be moved day by day.
"""

import datetime as dt

import pytest
from django.db import connection
from django.db.models import Min
from django.utils import timezone

from audiences.models import Consent
from audiences.services import consent_set_by_address, suppression_add
from campaigns import dispatcher, sender, services
from campaigns.models import Message
from campaigns.planner import dry_run
from campaigns.tests.factories import account, campaign, contacts, launched, send_inline, template

pytestmark = pytest.mark.django_db(transaction=True)


def _open(campaign_obj) -> int:
    return Message.objects.filter(campaign=campaign_obj, status__in=["pending", "queued", "sending"]).count()


def test_whatsapp_quota_of_250_a_day_takes_40_days_exactly_250_each_day_none_twice(brand_a, sandbox):
    contact_list, _ = contacts(brand_a, 10_000, consent=("whatsapp",))
    whatsapp = account(brand_a, "whatsapp", base_url=sandbox.url, daily_quota=250, quota_window="rolling_24h",
                       rate_per_second=1000)  # fmt: skip
    spring = campaign(brand_a, contact_list, [(whatsapp, template(brand_a))])
    assert dry_run(spring)["eta_days"] == 40
    launched(spring)
    start = timezone.now()
    per_day = []
    for day in range(45):
        now = start + dt.timedelta(days=day, seconds=day)
        before = len(sandbox.requests)
        for _ in range(3):  # several ticks a day: the quota, not the tick, is the limit
            dispatcher.dispatch(now=now + dt.timedelta(minutes=_), enqueue=send_inline)
        per_day.append(len(sandbox.requests) - before)
        if not _open(spring):
            break
    assert per_day == [250] * 40
    assert sandbox.counts and max(sandbox.counts.values()) == 1
    assert Message.objects.filter(campaign=spring, status="sent").count() == 10_000
    assert services.complete_if_done(spring)


def test_two_campaigns_share_an_account_quota_by_priority(brand_a, sandbox):
    list_a, _ = contacts(brand_a, 300, consent=("whatsapp",), list_name="A")
    list_b, _ = contacts(brand_a, 300, consent=("whatsapp",), list_name="B", start=300)
    whatsapp = account(brand_a, "whatsapp", base_url=sandbox.url, daily_quota=250, quota_window="rolling_24h")
    offer = template(brand_a)
    high = launched(campaign(brand_a, list_a, [(whatsapp, offer)], name="High", priority=8))
    low = launched(campaign(brand_a, list_b, [(whatsapp, offer)], name="Low", priority=3))
    start = timezone.now()
    sent = []
    for day in range(3):
        now = start + dt.timedelta(days=day, seconds=day)
        dispatcher.dispatch(now=now, enqueue=send_inline)
        dispatcher.dispatch(now=now + dt.timedelta(seconds=5), enqueue=send_inline)
        sent.append(
            (
                Message.objects.filter(campaign=high, status="sent").count(),
                Message.objects.filter(campaign=low, status="sent").count(),
            )
        )
    assert sent == [(250, 0), (300, 200), (300, 300)]


def test_stop_arriving_mid_campaign_stops_that_contact_on_that_channel(brand_a, sandbox):
    contact_list, people = contacts(brand_a, 30, consent=("sms",))
    sms = account(brand_a, "sms", base_url=sandbox.url, rate_per_second=10)
    launched(campaign(brand_a, contact_list, [(sms, template(brand_a))]))
    now = timezone.now()
    dispatcher.dispatch(now=now, enqueue=send_inline)  # 10 go out in the first second
    assert len(sandbox.requests) == 10
    stopper = next(p for p in people if p.phone not in sandbox.counts)
    # What the inbound STOP handler does (channels.webhooks): suppression + consent, at once.
    suppression_add(brand_a, "sms", stopper.phone, "stop", "keyword STOP")
    consent_set_by_address(brand_a, "sms", stopper.phone, "unsubscribed", "keyword STOP")
    # A message already claimed for the STOP-per when it arrived is refused at send time, too.
    Message.objects.filter(contact=stopper).update(status="queued")
    sender.send_batch(list(Message.objects.filter(contact=stopper).values_list("id", flat=True)))
    for second in range(1, 5):
        dispatcher.dispatch(now=now + dt.timedelta(seconds=second), enqueue=send_inline)
    assert stopper.phone not in sandbox.counts
    assert len(sandbox.requests) == 29
    stopped = Message.objects.get(contact=stopper)
    assert (stopped.status, stopped.skip_reason) == ("skipped", "suppressed")
    assert Consent.objects.get(contact=stopper, channel="sms").status == "unsubscribed"


def test_injected_429_and_5xx_everything_delivered_never_above_the_rate(brand_a, sandbox, settings):
    settings.SEND_MAX_ATTEMPTS = 10
    sandbox.configure(rate_429=0.1, rate_5xx=0.1, retry_after=1)
    contact_list, _ = contacts(brand_a, 200, consent=("sms",))
    sms = account(brand_a, "sms", base_url=sandbox.url, rate_per_second=20)
    spring = launched(campaign(brand_a, contact_list, [(sms, template(brand_a))]))
    clock = timezone.now()
    for _ in range(400):  # fake seconds, at least one per round
        queued = dispatcher.dispatch(now=clock, enqueue=send_inline)
        assert queued <= 20, "more than the account's rate claimed in one second"
        if not _open(spring):
            break
        # The retries keep the time their backoff set: when none is due within the next second, the
        # clock moves on to the first one's time (the rate then has a fresh second, too).
        first_due = Message.objects.filter(campaign=spring, status="pending").aggregate(at=Min("send_after"))["at"]
        clock = max(clock + dt.timedelta(seconds=1), first_due or clock)
    statuses = set(Message.objects.filter(campaign=spring).values_list("status", flat=True))
    assert statuses == {"sent"}
    assert len(sandbox.counts) == 200 and max(sandbox.counts.values()) == 1
    assert Message.objects.filter(campaign=spring, attempts__gt=1).exists()  # retries did happen


def test_permanent_failure_fails_over_to_the_next_channel(brand_a, sandbox):
    contact_list, people = contacts(brand_a, 3, consent=("sms", "email"))
    people[0].phone = "+14155550000"  # the sandbox's invalid number rule
    people[0].save()
    sms = account(brand_a, "sms", base_url=sandbox.url)
    email = account(brand_a, "email", base_url=sandbox.url)
    offer = template(brand_a)
    spring = launched(campaign(brand_a, contact_list, [(sms, offer), (email, offer)], channel_mode="failover"))
    now = timezone.now()
    for second in range(3):
        dispatcher.dispatch(now=now + dt.timedelta(seconds=second), enqueue=send_inline)
    failed = Message.objects.get(contact=people[0], channel="sms")
    assert (failed.status, failed.error_code) == ("failed", "21211")
    assert Message.objects.get(contact=people[0], channel="email").status == "sent"
    assert sandbox.counts[people[0].email] == 1 and people[1].email not in sandbox.counts
    assert services.complete_if_done(spring)


def test_a_template_failing_at_render_time_fails_its_message_not_the_batch(brand_a, sandbox):
    """A misspelt function, arithmetic on a text attribute: checks at save time only warn of such
    names, so a render error must fail that message (render_error) and let the rest of the batch go."""
    from campaigns.models import TemplateContent

    contact_list, people = contacts(brand_a, 3, consent=("sms",))
    people[1].attributes = {"orders": "many"}
    people[1].save()
    offer = template(brand_a)
    TemplateContent.objects.filter(template=offer).update(
        sms_text="Hi {{ contact.first_name }}, {{ (contact.attributes.orders or 0) + 1 }} orders{{ shout() if 0 }}"
    )
    sms = account(brand_a, "sms", base_url=sandbox.url)
    spring = launched(campaign(brand_a, contact_list, [(sms, offer)]))
    dispatcher.dispatch(now=timezone.now(), enqueue=send_inline)
    statuses = dict(Message.objects.filter(campaign=spring).values_list("contact_id", "status"))
    assert statuses == {people[0].pk: "sent", people[1].pk: "failed", people[2].pk: "sent"}
    failed = Message.objects.get(contact=people[1])
    assert failed.error_code == "render_error" and "sms_text" in failed.error_message
    assert "TypeError" in failed.error_message
    assert services.complete_if_done(spring)


def test_a_message_whose_contact_was_deleted_while_planning_is_cancelled_not_left_sending(brand_a, sandbox):
    contact_list, people = contacts(brand_a, 5, consent=("sms",))
    sms = account(brand_a, "sms", base_url=sandbox.url, rate_per_second=10)
    spring = launched(campaign(brand_a, contact_list, [(sms, template(brand_a))]))
    gone = people[0]
    # What a deletion committed while the plan was being written leaves behind: Django's cascade ran
    # before the message existed, and Message.contact is not a database constraint.
    with connection.cursor() as cursor:
        for table in ("audiences_consent", "audiences_consentevent", "audiences_listmembership"):
            cursor.execute(f"DELETE FROM {table} WHERE contact_id = %s", [gone.pk])
        cursor.execute("DELETE FROM audiences_contact WHERE id = %s", [gone.pk])
    dispatcher.dispatch(now=timezone.now(), enqueue=send_inline)
    orphan = Message.objects.get(contact_id=gone.pk)
    assert (orphan.status, orphan.error_code) == ("cancelled", "contact_deleted")
    assert len(sandbox.requests) == 4 and gone.phone not in sandbox.counts
    assert _open(spring) == 0


def test_pause_stops_claims_and_cancel_cancels_the_rest(brand_a, sandbox):
    contact_list, _ = contacts(brand_a, 30, consent=("sms",))
    sms = account(brand_a, "sms", base_url=sandbox.url, rate_per_second=10)
    spring = launched(campaign(brand_a, contact_list, [(sms, template(brand_a))]))
    now = timezone.now()
    dispatcher.dispatch(now=now, enqueue=send_inline)
    services.pause(spring, "test")
    dispatcher.dispatch(now=now + dt.timedelta(seconds=2), enqueue=send_inline)
    assert len(sandbox.requests) == 10
    services.resume(spring, "test")
    dispatcher.dispatch(now=now + dt.timedelta(seconds=4), enqueue=send_inline)
    assert len(sandbox.requests) == 20
    assert services.cancel(spring, "test") == 10
    dispatcher.dispatch(now=now + dt.timedelta(seconds=6), enqueue=send_inline)
    assert len(sandbox.requests) == 20
    progress = services.progress(spring)
    assert progress["by_status"] == {"sent": 20, "cancelled": 10} and progress["percent"] == 100.0


def test_transactional_api_is_idempotent_and_respects_unsubscribe(brand_a, sandbox, key_client):
    _, people = contacts(brand_a, 2, consent=())
    email = account(brand_a, "email", base_url=sandbox.url)
    receipt = template(brand_a, name="Receipt", purpose="transactional")
    body = {"contact": people[0].pk, "template": receipt.pk, "account": email.pk, "context": {"order": "A-17"}}
    first = key_client.post("/api/messages/", body, format="json", HTTP_IDEMPOTENCY_KEY="order-A-17")
    again = key_client.post("/api/messages/", body, format="json", HTTP_IDEMPOTENCY_KEY="order-A-17")
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert key_client.post("/api/messages/", body, format="json").status_code == 400  # no key
    dispatcher.dispatch(enqueue=send_inline)
    assert sandbox.counts[people[0].email] == 1
    consent_set_by_address(brand_a, "email", people[1].email, "unsubscribed", "test")
    refused = key_client.post("/api/messages/", {**body, "contact": people[1].pk}, format="json",
                              HTTP_IDEMPOTENCY_KEY="order-A-18")  # fmt: skip
    assert refused.status_code == 409 and "unsubscribed" in refused.json()["error"]["message"]


def test_unsubscribe_tokens_are_exactly_djangos_signed_tokens(monkeypatch, settings):
    """The sender's cheaper signer makes the very token ``signing.dumps`` makes, for any secret."""
    from types import SimpleNamespace

    from django.core import signing

    monkeypatch.setattr(signing.time, "time", lambda: 1_790_000_000.7)
    message = SimpleNamespace(pk=123456, contact_id=654321, channel="email")
    for secret in ("first-secret-key-for-the-test", "second-secret-key-for-the-test"):
        settings.SECRET_KEY = secret
        token = sender.unsubscribe_token(message)
        assert token == signing.dumps([123456, 654321, "email"], salt=sender.UNSUBSCRIBE_SALT, compress=True)
        assert signing.loads(token, salt=sender.UNSUBSCRIBE_SALT) == [123456, 654321, "email"]


def test_a_claim_that_fills_the_rate_window_says_when_it_frees_instead_of_asking_for_another_round(brand_a, sandbox):
    """The dispatch task sleeps until a full rate window frees; a round right after the claim that
    filled it would only find no capacity (the hub's CPU at a limit of 100/s)."""
    contact_list, _ = contacts(brand_a, 30, consent=("sms",))
    sms = account(brand_a, "sms", base_url=sandbox.url, rate_per_second=10)
    launched(campaign(brand_a, contact_list, [(sms, template(brand_a))]))
    report: dict = {}
    assert dispatcher.dispatch(enqueue=lambda _channel, _ids: None, report=report) == 10
    assert "again" not in report and 0.9 < report["free_in"] <= 1.0


def test_a_full_rate_window_reports_when_it_frees_at_the_clock_its_capacity_was_read_at(brand_a, sandbox):
    """A round reads the capacity at its start; when the window frees a moment later, the round still
    says when (zero seconds or more), not "nothing due": the dispatch task would end until the tick."""
    from channels import ratelimit

    contact_list, _ = contacts(brand_a, 30, consent=("sms",))
    sms = account(brand_a, "sms", base_url=sandbox.url, rate_per_second=10)
    spring = launched(campaign(brand_a, contact_list, [(sms, template(brand_a))]))
    filled = timezone.now() - dt.timedelta(seconds=2)  # a window filled two seconds ago...
    Message.objects.filter(campaign=spring).update(send_after=filled - dt.timedelta(seconds=1))
    assert len(ratelimit.acquire(sms, [f"x{i}" for i in range(10)], now=filled)) == 10
    report: dict = {}
    # ...and a round whose clock read 0.4 s after that: full then, free by the wall clock now.
    assert dispatcher.dispatch(now=filled + dt.timedelta(seconds=0.4), enqueue=lambda _c, _i: None, report=report) == 0
    assert report["free_in"] == pytest.approx(0.6)


def test_an_account_with_more_due_than_one_claim_asks_for_another_round_at_once(brand_a, sandbox, monkeypatch):
    contact_list, _ = contacts(brand_a, 30, consent=("email",))
    email = account(brand_a, "email", base_url=sandbox.url, rate_per_second=1_000_000)
    launched(campaign(brand_a, contact_list, [(email, template(brand_a))]))
    monkeypatch.setattr(dispatcher, "CLAIM_CHUNK", 20)
    monkeypatch.setattr(dispatcher, "LARGE_BATCH_CHUNKS", 1)  # SendGrid's batches: one chunk a round here
    report: dict = {}
    assert dispatcher.dispatch(enqueue=lambda _channel, _ids: None, report=report) == 20
    assert report == {"again": True}
    report = {}
    assert dispatcher.dispatch(enqueue=lambda _channel, _ids: None, report=report) == 10
    assert report == {}  # everything due is claimed: nothing to come back for


def test_an_account_with_batches_of_a_thousand_claims_several_batches_a_round(brand_a, sandbox, monkeypatch):
    contact_list, _ = contacts(brand_a, 30, consent=("email",))
    email = account(brand_a, "email", base_url=sandbox.url, rate_per_second=1_000_000)
    launched(campaign(brand_a, contact_list, [(email, template(brand_a))]))
    monkeypatch.setattr(dispatcher, "CLAIM_CHUNK", 10)
    batches = []
    report: dict = {}
    assert dispatcher.dispatch(enqueue=lambda _channel, ids: batches.append(ids), report=report) == 30
    assert [len(batch) for batch in batches] == [30] and report == {}


def test_outcomes_are_written_exactly_whatever_their_text(brand_a, sandbox):
    """The batch's outcomes travel as one JSON document: quotes, backslashes, braces, non-ASCII,
    empty and missing values, timestamps and amounts come back as they were set."""
    from decimal import Decimal

    contact_list, _ = contacts(brand_a, 3, consent=("sms",))
    sms = account(brand_a, "sms", base_url=sandbox.url)
    spring = launched(campaign(brand_a, contact_list, [(sms, template(brand_a))]))
    ids = list(Message.objects.filter(campaign=spring).order_by("id").values_list("id", flat=True))
    Message.objects.filter(pk__in=ids).update(status="queued")
    claimed = sender._claim(ids)
    assert [m.pk for m in claimed] == ids
    now = timezone.now()
    later = now + dt.timedelta(seconds=1234, microseconds=567)
    awkward = "a \"quoted\" \\ back{slash}, [x] \u00e9\u4e2d \U0001f600 'single' NULL"
    values = [
        {"status": "sent", "provider_message_id": "SM" + "f" * 98, "sent_at": now, "segments": 3,
         "cost": Decimal("0.02250"), "error_code": "", "error_message": ""},
        {"status": "pending", "send_after": later, "error_code": "20429", "error_message": awkward},
        {"status": "failed", "error_code": "21211", "error_message": "", "sent_at": None, "send_after": None},
    ]  # fmt: skip
    for message, changes in zip(claimed, values, strict=True):
        message.attempts += 1
        for name, value in changes.items():
            setattr(message, name, value)
    sender._write_outcomes(claimed, now)
    rows = {row["id"]: row for row in Message.objects.filter(pk__in=ids).values()}
    for message, changes in zip(claimed, values, strict=True):
        row = rows[message.pk]
        assert row["attempts"] == 1 and row["updated_at"] == now
        for name, value in changes.items():
            assert row[name] == value, name


def test_a_claim_reads_in_its_one_statement_exactly_what_the_orm_reads(brand_a):
    from campaigns.models import Variant

    contact_list, people = contacts(brand_a, 6, consent=("email",), attributes={"tier": "gold", "n": [1, 2.5]})
    email = account(brand_a, "email")
    spring = campaign(brand_a, contact_list, [(email, template(brand_a))])
    Variant.objects.create(campaign=spring, name="A", weight=50, template=template(brand_a, name="Variant A"))
    Variant.objects.create(campaign=spring, name="B", weight=50)
    launched(spring)
    messages = Message.objects.filter(campaign=spring).order_by("id")
    messages.filter(contact=people[1]).update(context={"coupon": "SPRING", "nested": {"x": None}})
    type(people[0]).objects.filter(pk=people[0].pk).update(time_zone="Asia/Tokyo")  # quiet hours' clock
    messages.update(status="queued")
    with connection.cursor() as cursor:  # a contact deleted under its message (see the test above)
        cursor.execute("DELETE FROM audiences_consent WHERE contact_id = %s", [people[2].pk])
        cursor.execute("DELETE FROM audiences_listmembership WHERE contact_id = %s", [people[2].pk])
        cursor.execute("DELETE FROM audiences_contact WHERE id = %s", [people[2].pk])
    ids = list(messages.values_list("id", flat=True))

    claimed = sender._claim(ids)

    expected = sender._claimed_rows(ids)  # the ORM's reading of the same rows, now 'sending'
    assert [vars_of(c) for c in claimed] == expected
    assert [c.contact["time_zone"] for c in claimed][:2] == ["Asia/Tokyo", ""]
    assert {c.variant_template_id for c in claimed} == {None, *Variant.objects.filter(campaign=spring)
                                                        .exclude(template=None).values_list("template", flat=True)}  # fmt: skip
    assert Message.objects.get(contact_id=people[2].pk).error_code == "contact_deleted"


def vars_of(claimed) -> dict:
    return {name: getattr(claimed, name) for name in claimed.__slots__ if hasattr(claimed, name)}


def test_a_claim_reads_the_messages_it_takes_not_every_pending_message_of_the_account(brand_a):
    """The claim's order (priority, then id) comes from an index: reading 10 of 300 due messages
    reads about 10 rows, where a sort of every pending row made each claim cost as much as the
    account's whole backlog (0.85 s at 76,000 pending SMS)."""
    import json

    from django.db import transaction

    contact_list, _ = contacts(brand_a, 300, consent=("sms",))
    sms = account(brand_a, "sms")
    launched(campaign(brand_a, contact_list, [(sms, template(brand_a))]))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE campaigns_message")
    with transaction.atomic(), connection.cursor() as cursor:
        # At 300 rows the planner prefers to read them all and sort, whatever the indexes; at a
        # campaign's size it does not. The question here is whether an index gives the claim's order.
        cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
        plan = json.loads(dispatcher.claimable(sms, timezone.now(), [])[:10].explain(format="json", analyze=True))

    def nodes(node):
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    read = [node for node in nodes(plan[0]["Plan"]) if node.get("Relation Name") == "campaigns_message"]
    assert [node["Node Type"] for node in nodes(plan[0]["Plan"]) if "Sort" in node["Node Type"]] == []
    assert len(read) == 1 and read[0]["Index Name"] == "message_claim_order" and read[0]["Actual Rows"] <= 12


# -- quiet hours at send time ----------------------------------------------------------------------------
def _quiet_nights(brand) -> None:
    """Quiet hours 21:00-08:00 in the brand's UTC; set after a launch, the plan's messages are due at once."""
    brand.time_zone, brand.quiet_hours_start, brand.quiet_hours_end = "UTC", dt.time(21), dt.time(8)
    brand.save()


def _tomorrow_at(hour: int, minute: int = 0, days: int = 1) -> dt.datetime:
    """A clock after the launch (so the planned messages are due) at a chosen UTC time of day."""
    return dt.datetime.combine(timezone.now().date() + dt.timedelta(days=days), dt.time(hour, minute), tzinfo=dt.UTC)


def _dispatch_at(clock: dt.datetime) -> int:
    """A dispatcher round and its sends, both on ``clock``."""
    return dispatcher.dispatch(now=clock, enqueue=lambda _channel, ids: sender.send_batch(ids, now=clock))


def test_a_retry_due_inside_quiet_hours_waits_for_their_end_and_goes_out_then(brand_a, sandbox, settings):
    settings.SEND_MAX_ATTEMPTS = 5
    contact_list, people = contacts(brand_a, 1, consent=("sms",))
    sms = account(brand_a, "sms", base_url=sandbox.url)
    spring = launched(campaign(brand_a, contact_list, [(sms, template(brand_a))]))
    _quiet_nights(brand_a)
    sandbox.configure(rate_429=1.0, retry_after=120)
    evening = _tomorrow_at(20, 59)
    _dispatch_at(evening)  # 429: retry in two minutes, at 21:01, inside the quiet hours
    retried = Message.objects.get(campaign=spring)
    assert (retried.status, retried.attempts, retried.send_after) == ("pending", 1, evening + dt.timedelta(minutes=2))
    sandbox.configure(rate_429=0.0)
    for minutes in (2, 3, 61, 300, 660):  # 21:01 ... 07:59
        _dispatch_at(evening + dt.timedelta(minutes=minutes))
        assert not sandbox.requests, f"sent at {evening + dt.timedelta(minutes=minutes):%H:%M}"
    morning = _tomorrow_at(8, days=2)
    deferred = Message.objects.get(campaign=spring)
    assert (deferred.status, deferred.attempts, deferred.send_after) == ("pending", 1, morning)
    _dispatch_at(morning)
    sent = Message.objects.get(campaign=spring)
    assert (sent.status, sent.attempts, sent.sent_at) == ("sent", 2, morning)
    assert sandbox.counts[people[0].phone] == 1


def test_a_failover_sms_planned_inside_quiet_hours_waits_for_their_end(brand_a, sandbox):
    blocked = str(10**12 + 1)  # the sandbox: this chat has blocked the bot (permanent failure)
    contact_list, people = contacts(brand_a, 1, consent=("telegram", "sms"), telegram_chat_id=blocked)
    telegram = account(brand_a, "telegram", base_url=sandbox.url)
    sms = account(brand_a, "sms", base_url=sandbox.url)
    offer = template(brand_a)
    spring = launched(campaign(brand_a, contact_list, [(telegram, offer), (sms, offer)], channel_mode="failover"))
    _quiet_nights(brand_a)
    night = _tomorrow_at(23)
    _dispatch_at(night)  # Telegram is not quiet: tried at 23:00, blocked, SMS planned for now
    assert Message.objects.get(campaign=spring, channel="telegram").status == "failed"
    for minutes in (0, 1, 120, 539):  # 23:00 ... 07:59
        _dispatch_at(night + dt.timedelta(minutes=minutes))
    failover = Message.objects.get(campaign=spring, channel="sms")
    morning = _tomorrow_at(8, days=2)
    assert (failover.status, failover.attempts, failover.send_after) == ("pending", 0, morning)
    assert people[0].phone not in sandbox.counts
    _dispatch_at(morning)
    assert Message.objects.get(campaign=spring, channel="sms").sent_at == morning
    assert sandbox.counts[people[0].phone] == 1


def test_a_transactional_sms_is_not_deferred_by_quiet_hours(brand_a, sandbox, key_client):
    """A one-time code or a receipt is expected now: quiet hours hold back marketing only."""
    _, people = contacts(brand_a, 1, consent=())
    sms = account(brand_a, "sms", base_url=sandbox.url)
    code = template(brand_a, name="Code", purpose="transactional")
    _quiet_nights(brand_a)
    body = {"contact": people[0].pk, "template": code.pk, "account": sms.pk, "context": {}}
    assert key_client.post("/api/messages/", body, format="json", HTTP_IDEMPOTENCY_KEY="code-1").status_code == 201
    night = _tomorrow_at(23)
    _dispatch_at(night)
    message = Message.objects.get(contact=people[0])
    assert (message.status, message.sent_at) == ("sent", night)
    assert sandbox.counts[people[0].phone] == 1
