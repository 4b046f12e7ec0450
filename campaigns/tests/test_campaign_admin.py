"""The campaign page in the admin: its counts (status, skip reason, channel, provider errors) and its
actions (launch, pause, resume, cancel, duplicate), for the campaign's brand only."""

import pytest
from django.urls import reverse
from django.utils import timezone

from audiences.models import Consent
from campaigns import services
from campaigns.models import Campaign, Message
from campaigns.tests.factories import account, campaign, contacts, template
from marketing_hub.roles import Role
from marketing_hub.tests.factories import member

CHANGELIST = "admin:campaigns_campaign_changelist"


@pytest.fixture
def spring(brand_a, django_capture_on_commit_callbacks):
    """A launched SMS campaign of 10 contacts: 2 skipped without consent, 5 sent, 3 failed on Twilio 30007."""
    contact_list, people = contacts(brand_a, 10)
    Consent.objects.filter(contact__in=people[:2], channel="sms").update(status="unsubscribed")
    created = campaign(brand_a, contact_list, [(account(brand_a, "sms"), template(brand_a))])
    with django_capture_on_commit_callbacks(execute=False):  # no dispatch: the test sets the outcomes
        services.launch(created, "tester")
    planned = list(Message.objects.filter(campaign=created, status="pending").order_by("id"))
    Message.objects.filter(pk__in=[m.pk for m in planned[:5]]).update(status="sent", sent_at=timezone.now())
    Message.objects.filter(pk__in=[m.pk for m in planned[5:]]).update(
        status="failed", error_code="30007", error_message="Carrier violation"
    )
    return created


def test_the_change_page_counts_by_status_skip_reason_channel_and_provider_error(client, brand_a, spring):
    client.force_login(member(brand_a, Role.MARKETER, username="m"))
    page = client.get(reverse("admin:campaigns_campaign_change", args=[spring.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "<strong>100.0%</strong> (10 of 10)" in html
    assert "<tr><td>sent</td><td>5</td></tr>" in html
    assert "<tr><td>failed</td><td>3</td></tr>" in html
    assert "<tr><td>skipped</td><td>2</td></tr>" in html
    assert "<tr><td>skipped: no_consent</td><td>2</td></tr>" in html
    assert "<tr><td>sms</td><td>failed: 3, sent: 5</td></tr>" in html
    assert "<tr><td>twilio_sms 30007</td><td>3, last " in html


def test_provider_errors_show_the_latest_first_with_retries_waiting(client, brand_a, spring):
    """A code that is failing messages right now comes before one that failed earlier, however many
    that was; messages waiting for a retry show their error too."""
    import datetime as dt

    later = timezone.now() + dt.timedelta(minutes=5)
    retrying = Message.objects.filter(campaign=spring, status="failed").order_by("id").first()
    Message.objects.filter(pk=retrying.pk).update(status="pending", error_code="20429", updated_at=later)
    client.force_login(member(brand_a, Role.MARKETER, username="m"))
    html = client.get(reverse("admin:campaigns_campaign_change", args=[spring.pk])).content.decode()
    assert "<tr><td>twilio_sms 20429</td><td>1, last " in html
    assert "<tr><td>twilio_sms 30007</td><td>2, last " in html
    assert html.index("twilio_sms 20429") < html.index("twilio_sms 30007")


def _act(client, action: str, *campaigns):
    return client.post(
        reverse(CHANGELIST), {"action": action, "_selected_action": [c.pk for c in campaigns]}, follow=True
    )


def _status(item) -> str:
    return Campaign.objects.values_list("status", flat=True).get(pk=item.pk)


def test_the_actions_move_the_campaign(client, brand_a, spring, django_capture_on_commit_callbacks):
    client.force_login(member(brand_a, Role.MARKETER, username="m"))
    step = spring.channels.get()
    draft = campaign(brand_a, spring.lists.get(), [(step.account, step.template)], name="Summer")
    with django_capture_on_commit_callbacks(execute=False):
        launched = _act(client, "launch", draft)
    assert _status(draft) == "running" and "Launched 1 campaign(s)." in launched.content.decode()

    paused = _act(client, "pause", draft)
    assert _status(draft) == "paused" and "Paused 1 campaign(s)." in paused.content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        resumed = _act(client, "resume", draft)
    assert _status(draft) == "running" and "Resumed 1 campaign(s)." in resumed.content.decode()
    cancelled = _act(client, "cancel", draft)
    assert _status(draft) == "cancelled" and "Cancelled 1 campaign(s)." in cancelled.content.decode()
    assert set(Message.objects.filter(campaign=draft).values_list("status", flat=True)) == {"cancelled", "skipped"}
    refused = _act(client, "resume", draft)  # a final status: refused, said so, nothing changes
    assert _status(draft) == "cancelled" and "Summer: " in refused.content.decode()

    duplicated = _act(client, "duplicate", spring)
    copy = Campaign.objects.get(name="Spring sale (copy)")
    assert "Duplicated 1 campaign(s)." in duplicated.content.decode()
    assert copy.status == "draft" and copy.brand_id == brand_a.pk
    assert list(copy.channels.values_list("account", "template")) == list(
        spring.channels.values_list("account", "template")
    )


def test_a_user_of_another_brand_neither_sees_nor_moves_the_campaign(client, brand_a, brand_b, spring):
    client.force_login(member(brand_b, Role.MARKETER, username="b"))
    assert client.get(reverse("admin:campaigns_campaign_change", args=[spring.pk])).status_code == 404
    listed = client.get(reverse(CHANGELIST))
    assert list(listed.context["cl"].result_list) == []
    for action in ("pause", "cancel", "duplicate"):
        _act(client, action, spring)
    assert _status(spring) == "running"
    assert Campaign.objects.count() == 1  # not duplicated
    assert set(Message.objects.filter(campaign=spring).values_list("status", flat=True)) == {
        "sent", "failed", "skipped"
    }  # fmt: skip


def test_the_list_counts_the_messages_of_the_campaigns_it_shows_and_no_others(client, brand_a, spring):
    """The list's counts come from one query over the shown campaigns' messages: joining every campaign
    to its messages in the list's own query read the whole message table on every visit."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(member(brand_a, Role.MARKETER, username="m"))
    with CaptureQueriesContext(connection) as queries:
        html = client.get(reverse(CHANGELIST)).content.decode()
    assert "<small>10 / 10</small>" in html  # every message of the fixture is final: sent, failed, skipped
    reading_messages = [q["sql"] for q in queries.captured_queries if '"campaigns_message"' in q["sql"]]
    assert reading_messages, "the counts were not read"
    assert not any('JOIN "campaigns_message"' in sql for sql in reading_messages), reading_messages
    assert all(f'"campaign_id" IN ({spring.pk})' in sql for sql in reading_messages), reading_messages
