"""The planner and the lifecycle: every contact accounted for, no duplicates, legal transitions only."""

import datetime as dt

import pytest
from django.utils import timezone

from audiences.models import Consent, Contact, Suppression
from campaigns import services
from campaigns.models import CampaignTransition, Message, Send, Variant
from campaigns.planner import dry_run, plan_send, summarize
from campaigns.tests.factories import account, campaign, contacts, template


@pytest.fixture
def setup(brand_a):
    contact_list, people = contacts(brand_a, 20)
    email = account(brand_a, "email")
    sms = account(brand_a, "sms")
    offer = template(brand_a)
    return contact_list, people, email, sms, offer


def test_every_contact_is_accounted_for_with_reasons(brand_a, setup):
    contact_list, people, email, sms, offer = setup
    # 3 without email (one of them without a phone too), 2 without email consent, 1 suppressed, 1 erased.
    Contact.objects.filter(pk__in=[p.pk for p in people[:3]]).update(email=None)
    Contact.objects.filter(pk=people[0].pk).update(phone=None, whatsapp=None)
    Consent.objects.filter(contact__in=people[3:5], channel="email").update(status="unsubscribed")
    Consent.objects.filter(contact__in=people[3:4], channel="sms").delete()
    Suppression.objects.create(brand=brand_a, channel="email", address=people[5].email, reason="hard_bounce")
    Contact.objects.filter(pk=people[6].pk).update(erased_at=timezone.now())
    spring = campaign(brand_a, contact_list, [(email, offer), (sms, offer)])

    preview = dry_run(spring)
    send = Send.objects.create(campaign=spring, occurrence="once")
    plan = plan_send(send)

    assert plan.targeted == preview["targeted"] == 19  # the erased contact is not in the audience
    assert plan.by_channel == preview["recipients_by_channel"] == {"email": 13, "sms": 4}
    assert plan.skipped == preview["skipped_by_reason"] == {"no_address": 1, "no_consent": 1}
    assert plan.queued + sum(plan.skipped.values()) == plan.targeted
    assert Message.objects.get(contact=people[5]).channel == "sms"  # suppressed on email: next channel
    assert Message.objects.get(contact=people[1]).address == people[1].phone

    assert plan == summarize(send)  # counted from the INSERT's RETURNING: what the messages say
    again = plan_send(send)  # re-planning (a crashed launch retried) adds nothing
    assert again.targeted == 19 and Message.objects.count() == 19


def test_every_channel_mode_and_variants_by_deterministic_hash(brand_a, setup):
    contact_list, _people, email, sms, offer = setup
    spring = campaign(brand_a, contact_list, [(email, offer), (sms, offer)], channel_mode="every_channel")
    Variant.objects.create(campaign=spring, name="A", weight=50)
    Variant.objects.create(campaign=spring, name="B", weight=50)
    send = Send.objects.create(campaign=spring, occurrence="once")
    plan = plan_send(send)
    assert plan.by_channel == {"email": 20, "sms": 20}
    assert set(plan.by_variant) == {"A", "B"} and sum(plan.by_variant.values()) == 40
    variant_of = dict(Message.objects.filter(channel="email").values_list("contact_id", "variant__name"))
    assert variant_of == dict(Message.objects.filter(channel="sms").values_list("contact_id", "variant__name"))


def test_a_first_reachable_plan_with_variants_reports_what_its_messages_say(brand_a, setup):
    contact_list, people, email, sms, offer = setup
    Consent.objects.filter(contact__in=people[:4], channel="email").delete()
    Consent.objects.filter(contact__in=people[:2], channel="sms").delete()
    spring = campaign(brand_a, contact_list, [(email, offer), (sms, offer)])
    Variant.objects.create(campaign=spring, name="A", weight=30)
    Variant.objects.create(campaign=spring, name="B", weight=70)
    send = Send.objects.create(campaign=spring, occurrence="once")
    plan = plan_send(send)
    assert plan == summarize(send)
    assert plan.by_channel == {"email": 16, "sms": 2} and plan.skipped == {"no_consent": 2}
    assert set(plan.by_variant) == {"A", "B"} and sum(plan.by_variant.values()) == plan.targeted == 20


def test_every_channel_with_one_channel_twice_writes_one_message_per_contact(brand_a, setup):
    contact_list, _people, email, _sms, offer = setup
    email.name = "email one"
    email.save(update_fields=["name"])
    other = account(brand_a, "email")
    spring = campaign(brand_a, contact_list, [(email, offer), (other, offer)], channel_mode="every_channel")
    send = Send.objects.create(campaign=spring, occurrence="once")
    plan = plan_send(send)
    assert plan.by_channel == {"email": 20} and plan.targeted == 20
    assert set(Message.objects.filter(send=send).values_list("account_id", flat=True)) == {email.pk}
    assert plan_send(send).targeted == 20 and Message.objects.filter(send=send).count() == 20


def test_frequency_cap_counts_other_campaigns(brand_a, setup):
    contact_list, _people, email, _sms, offer = setup
    first = campaign(brand_a, contact_list, [(email, offer)], name="First")
    plan_send(Send.objects.create(campaign=first, occurrence="once"))
    Message.objects.filter(campaign=first).update(status="sent", sent_at=timezone.now())
    second = campaign(brand_a, contact_list, [(email, offer)], name="Second", frequency_cap=1)
    plan = plan_send(Send.objects.create(campaign=second, occurrence="once"))
    assert plan.skipped == {"frequency_cap": 20}


def _days_ago(days: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(days=days)


# An earlier marketing message to each contact (first campaign, on its channel), then a second campaign on
# email with a cap of 1: is the earlier message counted (every contact skipped) or not (every one queued)?
CAP_CASES = {
    "sent yesterday, on another channel": ("sms", {"status": "sent", "sent_at": 1}, False),
    "planned 9 days ago, sent 8 days ago": ("email", {"status": "sent", "created_at": 9, "sent_at": 8}, False),
    "planned 10 days ago, sent yesterday": ("email", {"status": "sent", "created_at": 10, "sent_at": 1}, True),
    "planned 10 days ago, delivered yesterday": ("email", {"status": "delivered", "created_at": 10, "sent_at": 1}, True),
    "planned 10 days ago, still pending": ("email", {"status": "pending", "created_at": 10}, True),
    "planned 10 days ago, lost in the provider call yesterday": (
        "email", {"status": "unknown", "created_at": 10, "updated_at": 1}, True,
    ),
    "planned 10 days ago, failed yesterday": ("email", {"status": "failed", "created_at": 10, "updated_at": 1}, False),
    "transactional, sent yesterday": ("email", {"status": "sent", "sent_at": 1, "marketing": False}, False),
}  # fmt: skip


@pytest.mark.parametrize(("channel", "earlier", "counted"), CAP_CASES.values(), ids=CAP_CASES.keys())
def test_frequency_cap_counts_marketing_messages_on_the_channel_sent_in_the_last_7_days(
    brand_a, setup, channel, earlier, counted
):
    contact_list, _people, email, sms, offer = setup
    first = campaign(brand_a, contact_list, [({"email": email, "sms": sms}[channel], offer)], name="First")
    plan_send(Send.objects.create(campaign=first, occurrence="once"))
    changes = {k: _days_ago(v) if k.endswith("_at") else v for k, v in earlier.items()}
    Message.objects.filter(campaign=first).update(**changes)
    second = campaign(brand_a, contact_list, [(email, offer)], name="Second", frequency_cap=1)

    preview = dry_run(second)
    plan = plan_send(Send.objects.create(campaign=second, occurrence="once"))

    expected = {"frequency_cap": 20} if counted else {}
    assert plan.skipped == preview["skipped_by_reason"] == expected
    assert plan.by_channel == ({} if counted else {"email": 20})


def test_frequency_cap_counts_a_recurring_campaigns_earlier_occurrences(brand_a, setup):
    contact_list, _people, email, _sms, offer = setup
    weekly = campaign(brand_a, contact_list, [(email, offer)], schedule_kind="recurring", crontab="0 9 * * *",
                      frequency_cap=1)  # fmt: skip
    earlier = Send.objects.create(campaign=weekly, occurrence=_days_ago(1).isoformat())
    plan_send(earlier)
    Message.objects.filter(send=earlier).update(status="sent", sent_at=_days_ago(1))

    today = Send.objects.create(campaign=weekly, occurrence=timezone.now().isoformat())
    plan = plan_send(today)

    assert plan.skipped == {"frequency_cap": 20}


def test_frequency_cap_leaves_out_the_sends_own_messages(brand_a, setup):
    """Every-channel plans write a statement per step, then the skipped: the messages the first
    statements wrote are this send's own, not earlier ones, and must not turn their contacts skipped."""
    contact_list, _people, email, sms, offer = setup
    both = campaign(brand_a, contact_list, [(email, offer), (sms, offer)], channel_mode="every_channel",
                    frequency_cap=1)  # fmt: skip
    plan = plan_send(Send.objects.create(campaign=both, occurrence="once"))
    assert plan.skipped == {} and plan.by_channel == {"email": 20, "sms": 20}


def test_quiet_hours_defer_sms_to_the_local_morning(brand_a, setup):
    contact_list, people, _email, sms, offer = setup
    brand_a.quiet_hours_start, brand_a.quiet_hours_end = dt.time(21), dt.time(8)
    brand_a.save()
    Contact.objects.filter(pk=people[0].pk).update(time_zone="Asia/Tokyo")
    spring = campaign(brand_a, contact_list, [(sms, offer)])
    now = dt.datetime(2026, 3, 2, 13, 0, tzinfo=dt.UTC)  # 22:00 in Tokyo, 13:00 UTC (brand time zone)
    plan_send(Send.objects.create(campaign=spring, occurrence="once"), now=now)
    tokyo = Message.objects.get(contact=people[0]).send_after
    assert tokyo == dt.datetime(2026, 3, 2, 23, 0, tzinfo=dt.UTC)  # 08:00 next morning in Tokyo
    assert Message.objects.get(contact=people[1]).send_after == now


def test_local_time_schedule(brand_a, setup):
    contact_list, people, email, _sms, offer = setup
    Contact.objects.filter(pk=people[0].pk).update(time_zone="America/New_York")
    spring = campaign(brand_a, contact_list, [(email, offer)], schedule_kind="local_time", local_time=dt.time(9))
    now = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    plan_send(Send.objects.create(campaign=spring, occurrence="once"), now=now)
    assert Message.objects.get(contact=people[0]).send_after == dt.datetime(2026, 7, 1, 13, 0, tzinfo=dt.UTC)
    assert Message.objects.get(contact=people[1]).send_after == dt.datetime(2026, 7, 2, 9, 0, tzinfo=dt.UTC)


def test_state_machine_refuses_illegal_transitions_and_records_each(brand_a, setup, django_capture_on_commit_callbacks):
    contact_list, _people, email, _sms, offer = setup
    spring = campaign(brand_a, contact_list, [(email, offer)])
    with pytest.raises(services.IllegalTransition, match="draft campaign cannot become paused"):
        services.pause(spring, "tester")
    with django_capture_on_commit_callbacks(execute=False):
        services.launch(spring, "tester")
    assert spring.status == "running" and Message.objects.filter(campaign=spring).count() == 20
    services.pause(spring, "tester")
    services.resume(spring, "tester")
    cancelled = services.cancel(spring, "tester")
    assert cancelled == 20 and set(Message.objects.values_list("status", flat=True)) == {"cancelled"}
    with pytest.raises(services.IllegalTransition, match="final"):
        services.resume(spring, "tester")
    history = list(CampaignTransition.objects.filter(campaign=spring).values_list("from_status", "to_status", "actor"))
    assert history == [
        ("draft", "running", "tester"),
        ("running", "paused", "tester"),
        ("paused", "running", "tester"),
        ("running", "cancelled", "tester"),
    ]


def test_dry_run_eta_for_a_whatsapp_quota(brand_a):
    contact_list, _ = contacts(brand_a, 1000, consent=("whatsapp",))
    whatsapp = account(brand_a, "whatsapp", daily_quota=25, quota_window="rolling_24h", rate_per_second=10)
    spring = campaign(brand_a, contact_list, [(whatsapp, template(brand_a))])
    assert dry_run(spring)["eta_days"] == 40


def test_dry_run_warns_of_whatsapp_free_text_outside_a_conversation(brand_a):
    """Free WhatsApp text reaches only contacts in a 24-hour session; a campaign needs an approved template."""
    from campaigns.admin import dry_run_text
    from campaigns.models import TemplateContent

    contact_list, _ = contacts(brand_a, 5, consent=("whatsapp",))
    whatsapp = account(brand_a, "whatsapp")
    free_text = template(brand_a, name="Free text")  # the factory's content has whatsapp_text only
    spring = campaign(brand_a, contact_list, [(whatsapp, free_text)])
    warnings = dry_run(spring)["warnings"]
    assert len(warnings) == 1 and "'Free text' (en)" in warnings[0] and "63016" in warnings[0]
    assert "Warning: WhatsApp step 1" in dry_run_text(dry_run(spring))
    TemplateContent.objects.filter(template=free_text).update(whatsapp_content_sid="HX" + "0" * 32)
    assert dry_run(spring)["warnings"] == []
    email_only = campaign(brand_a, contact_list, [(account(brand_a, "email"), template(brand_a, name="Mail"))])
    assert dry_run(email_only)["warnings"] == []


def test_dry_run_counts_recipients_deferred_by_quiet_hours_per_channel(brand_a, setup):
    """Two time zones at 13:00 UTC: 22:00 in Tokyo (quiet) and 13:00 in the brand's UTC (not). The
    Tokyo contacts chosen on SMS are counted, on email not; they stay recipients, as the plan says."""
    contact_list, people, email, sms, offer = setup
    brand_a.quiet_hours_start, brand_a.quiet_hours_end = dt.time(21), dt.time(8)
    brand_a.save()
    Contact.objects.filter(pk__in=[p.pk for p in people[:5]]).update(time_zone="Asia/Tokyo")
    # Tokyo: 0-2 only reachable by SMS, 3-4 by email. UTC: 5-6 only by SMS, the rest by email.
    Consent.objects.filter(contact__in=[*people[:3], *people[5:7]], channel="email").delete()
    first_reachable = campaign(brand_a, contact_list, [(email, offer), (sms, offer)], name="First reachable")
    every = campaign(brand_a, contact_list, [(email, offer), (sms, offer)], name="Every", channel_mode="every_channel")
    now = dt.datetime(2026, 3, 2, 13, 0, tzinfo=dt.UTC)

    preview = dry_run(first_reachable, now=now)

    assert preview["recipients_by_channel"] == {"email": 15, "sms": 5}
    assert preview["deferred_by_quiet_hours"] == {"sms": 3}
    assert dry_run(every, now=now)["deferred_by_quiet_hours"] == {"sms": 5}  # every Tokyo contact on SMS
    plan_send(Send.objects.create(campaign=first_reachable, occurrence="once"), now=now)
    later = Message.objects.filter(campaign=first_reachable, status="pending", send_after__gt=now)
    assert set(later.values_list("contact_id", flat=True)) == {p.pk for p in people[:3]}
    brand_a.quiet_hours_start = brand_a.quiet_hours_end = None
    brand_a.save()
    assert dry_run(first_reachable, now=now)["deferred_by_quiet_hours"] == {}


def test_admin_dry_run_action_says_quiet_hours_defer(client, brand_a, setup):
    from django.urls import reverse

    from marketing_hub.roles import Role
    from marketing_hub.tests.factories import member

    contact_list, _people, _email, sms, offer = setup
    now = timezone.now().astimezone(dt.UTC)
    # Quiet hours around the real clock (the admin's dry run is "launching now"), in the brand's UTC.
    brand_a.time_zone = "UTC"
    brand_a.quiet_hours_start = (now - dt.timedelta(hours=1)).time().replace(second=0, microsecond=0)
    brand_a.quiet_hours_end = (now + dt.timedelta(hours=2)).time().replace(second=0, microsecond=0)
    brand_a.save()
    spring = campaign(brand_a, contact_list, [(sms, offer)])
    client.force_login(member(brand_a, Role.MARKETER, username="m"))
    response = client.post(
        reverse("admin:campaigns_campaign_changelist"),
        {"action": "dry_run", "_selected_action": [spring.pk]},
        follow=True,
    )
    shown = [str(m) for m in response.context["messages"]]
    assert len(shown) == 1 and "recipients: sms 20" in shown[0], shown
    assert "quiet hours defer (still recipients, sent when they end): sms 20" in shown[0]
    assert Message.objects.count() == 0  # a dry run writes nothing
