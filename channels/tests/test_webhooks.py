"""Inbound webhooks: signed requests are acted on once; forged, stale, replayed and malformed ones are not."""

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from twilio.request_validator import RequestValidator

from audiences.models import Consent, ConsentEvent, Contact, Suppression
from audiences.services import telegram_link_token
from campaigns.models import Message
from campaigns.tests.factories import account
from channels.models import ProviderEvent, WebhookLog
from channels.webhooks import rejection_count

TOKEN = "token-test"  # the factory's Twilio auth token


def twilio_post(client, path, params, token=TOKEN):
    signature = RequestValidator(token).compute_signature(settings.PUBLIC_BASE_URL + path, params)
    return client.post(path, params, HTTP_X_TWILIO_SIGNATURE=signature)


@pytest.fixture
def sms(brand_a):
    return account(brand_a, "sms")


@pytest.fixture
def message(brand_a, sms):
    contact = Contact.objects.create(brand=brand_a, phone="+14155550123", email="m@x.test")
    return Message.objects.create(brand=brand_a, contact=contact, channel="sms", account=sms, status="sending",
                                  address=contact.phone)  # fmt: skip


def test_twilio_status_callbacks_move_the_message_once(client, sms, message):
    path = f"/webhooks/twilio/{sms.pk}/status/?m={message.pk}"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+14155550123"}
    assert twilio_post(client, path, params).status_code == 200
    assert twilio_post(client, path, params).status_code == 200  # a retry by Twilio
    message.refresh_from_db()
    assert (message.status, message.provider_message_id) == ("delivered", "SM1")  # a lost worker's message settled
    assert ProviderEvent.objects.count() == 1
    assert list(WebhookLog.objects.order_by("id").values_list("verdict", flat=True)) == ["accepted", "duplicate"]


def test_forged_and_malformed_twilio_requests_leave_only_the_log(client, sms, message):
    path = f"/webhooks/twilio/{sms.pk}/status/?m={message.pk}"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    assert twilio_post(client, path, params, token="wrong-token").status_code == 403
    assert client.post(path, params).status_code == 403  # no signature at all
    assert twilio_post(client, path, {"MessageSid": "SM1", "MessageStatus": "exploded"}).status_code == 400
    assert twilio_post(client, f"/webhooks/twilio/{sms.pk + 999}/status/", params).status_code == 404
    message.refresh_from_db()
    assert message.status == "sending" and not ProviderEvent.objects.exists()
    assert rejection_count("twilio", "forged") == 2
    verdicts = list(WebhookLog.objects.order_by("id").values_list("verdict", flat=True))
    assert verdicts == ["forged", "forged", "malformed", "unknown_account"]
    assert all("authorization" not in {k.lower() for k in log.headers} for log in WebhookLog.objects.all())


def test_stop_unsubscribes_at_once_and_start_resubscribes_but_never_lifts_a_bounce(client, brand_a, sms):
    contact = Contact.objects.create(brand=brand_a, phone="+14155550123")
    Consent.objects.create(
        contact=contact, channel="sms", status="subscribed", source="t", updated_at="2026-01-01T00:00Z"
    )
    path = f"/webhooks/twilio/{sms.pk}/inbound/"
    stop = {"MessageSid": "SMa", "From": "+14155550123", "To": "+14155550000", "Body": " stop "}
    assert twilio_post(client, path, stop).status_code == 200
    assert Consent.objects.get(contact=contact).status == "unsubscribed"
    assert Suppression.objects.filter(address="+14155550123", reason="stop").exists()
    Suppression.objects.create(brand=brand_a, channel="sms", address="+14155550123", reason="hard_bounce")
    twilio_post(client, path, {**stop, "MessageSid": "SMb", "Body": "START"})
    assert Consent.objects.get(contact=contact).status == "subscribed"
    assert list(Suppression.objects.values_list("reason", flat=True)) == ["hard_bounce"]
    sources = list(ConsentEvent.objects.order_by("id").values_list("source", flat=True))
    assert sources == ["keyword STOP", "keyword START"]


@pytest.fixture
def sendgrid_keys():
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode()


def sendgrid_post(client, path, events, private, timestamp=None):
    body = json.dumps(events).encode()
    timestamp = str(int(timestamp or time.time()))
    signature = base64.b64encode(private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return client.generic("POST", path, body, content_type="application/json",
                          HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE=signature,
                          HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP=timestamp)  # fmt: skip


def test_sendgrid_events_verified_with_a_replay_window(client, brand_a, sendgrid_keys):
    private, public = sendgrid_keys
    email = account(brand_a, "email")
    email.set_credentials({**email.credentials, "webhook_public_key": public})
    email.save()
    contact = Contact.objects.create(brand=brand_a, email="gone@bounce.test")
    sent = Message.objects.create(brand=brand_a, contact=contact, channel="email", account=email, status="sent",
                                  address=contact.email)  # fmt: skip
    path = f"/webhooks/sendgrid/{email.pk}/events/"
    events = [
        {"event": "delivered", "email": "gone@bounce.test", "sg_event_id": "e1", "mh_message_id": str(sent.pk),
         "timestamp": int(time.time())},
        {"event": "bounce", "email": "gone@bounce.test", "sg_event_id": "e2", "mh_message_id": str(sent.pk),
         "status": "5.1.1", "reason": "user unknown", "timestamp": int(time.time())},
        {"event": "whatever", "sg_event_id": "e3"},
    ]  # fmt: skip
    assert sendgrid_post(client, path, events, private).status_code == 200
    sent.refresh_from_db()
    assert (sent.status, sent.error_code) == ("failed", "5.1.1")
    assert Suppression.objects.filter(address="gone@bounce.test", reason="hard_bounce").exists()
    assert sendgrid_post(client, path, events, private).status_code == 200  # retried: nothing new
    assert ProviderEvent.objects.count() == 2
    stale = sendgrid_post(client, path, [{**events[0], "sg_event_id": "e9"}], private, timestamp=time.time() - 3600)
    assert stale.status_code == 403
    other_key = ec.generate_private_key(ec.SECP256R1())
    assert sendgrid_post(client, path, [{**events[0], "sg_event_id": "e8"}], other_key).status_code == 403
    assert ProviderEvent.objects.count() == 2
    assert rejection_count("sendgrid", "stale") == 1 and rejection_count("sendgrid", "forged") == 1


def test_telegram_start_links_a_chat_and_a_blocked_bot_loses_consent(client, brand_a):
    bot = account(brand_a, "telegram")
    bot.set_webhook_secret("tg-secret")
    bot.save()
    contact = Contact.objects.create(brand=brand_a, email="t@x.test")
    path = f"/webhooks/telegram/{bot.pk}/"
    start = {"update_id": 1, "message": {"message_id": 5, "chat": {"id": 777, "type": "private"},
                                         "text": f"/start {telegram_link_token(contact)}"}}  # fmt: skip
    forged = client.post(path, start, content_type="application/json", HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN="nope")
    assert forged.status_code == 403
    ok = client.post(path, start, content_type="application/json", HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN="tg-secret")
    assert ok.status_code == 200
    contact.refresh_from_db()
    assert contact.telegram_chat_id == "777"
    assert Consent.objects.get(contact=contact, channel="telegram").status == "subscribed"
    kicked = {"update_id": 2, "my_chat_member": {"chat": {"id": 777}, "new_chat_member": {"status": "kicked"}}}
    client.post(path, kicked, content_type="application/json", HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN="tg-secret")
    assert Consent.objects.get(contact=contact, channel="telegram").status == "unsubscribed"


@pytest.mark.django_db(transaction=True)
def test_sandbox_callbacks_reach_the_hub_signed_and_deliver_the_message(live_server, settings, sandbox, brand_a):
    """The whole loop over HTTP: adapter → sandbox → signed callback → hub → message delivered."""
    from campaigns import sender

    settings.PUBLIC_BASE_URL = live_server.url
    sandbox.configure(callbacks=True, callback_delay_ms=10)
    sms = account(brand_a, "sms", base_url=sandbox.url)
    contact = Contact.objects.create(brand=brand_a, phone="+14155550123")
    Consent.objects.create(
        contact=contact, channel="sms", status="subscribed", source="t", updated_at="2026-01-01T00:00Z"
    )
    from campaigns.tests.factories import template

    message = Message.objects.create(brand=brand_a, contact=contact, channel="sms", account=sms, status="queued",
                                     address=contact.phone, template=template(brand_a), marketing=True)  # fmt: skip
    sender.send_batch([message.pk])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message.refresh_from_db()
        if message.status == "delivered":
            break
        time.sleep(0.05)
    assert message.status == "delivered"
    assert sandbox.callback_failures == 0
    assert set(ProviderEvent.objects.values_list("event_type", flat=True)) == {"sent", "delivered"}


@pytest.mark.django_db(transaction=True)
def test_one_event_delivered_concurrently_is_acted_on_once(sms, message):
    """Providers retry while the first delivery is still in flight: the database decides, not a prior read."""
    import threading

    from django.db import connection
    from django.test import Client

    path = f"/webhooks/twilio/{sms.pk}/status/?m={message.pk}"
    params = {"MessageSid": "SM7", "MessageStatus": "delivered", "To": "+14155550123"}
    start, answers = threading.Barrier(4), []

    def deliver():
        try:
            start.wait()
            answers.append(twilio_post(Client(), path, params).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 4
    verdicts = sorted(WebhookLog.objects.values_list("verdict", flat=True))
    assert verdicts == ["accepted", "duplicate", "duplicate", "duplicate"]
    assert ProviderEvent.objects.count() == 1


def test_a_batch_of_events_ends_where_one_at_a_time_would(client, brand_a, sendgrid_keys):
    """One SendGrid request moves its messages with one UPDATE per target status; every message must
    end exactly as if each event had come in its own request (status, delivered_at, error, provider id)."""
    import itertools
    import random

    private, public = sendgrid_keys
    email = account(brand_a, "email")
    email.set_credentials({**email.credentials, "webhook_public_key": public})
    email.save()
    path = f"/webhooks/sendgrid/{email.pk}/events/"
    kinds = ["delivered", "bounce", "dropped", "open"]
    starts = ["queued", "sending", "sent", "unknown", "delivered", "failed", "pending", "cancelled"]
    cases = [
        (start, events, by_sid)
        for start in starts
        for events in [*itertools.product(kinds, repeat=2), *random.Random(7).sample(list(itertools.product(kinds, repeat=3)), 12)]
        for by_sid in (False, True)
    ]  # fmt: skip
    contact = Contact.objects.create(brand=brand_a, email="many@example.com")

    def messages(label):
        return [
            Message.objects.create(brand=brand_a, contact=contact, channel="email", account=email, status=start,
                                   address=contact.email, provider_message_id=f"{label}-{i}" if by_sid else "")
            for i, (start, _, by_sid) in enumerate(cases)
        ]  # fmt: skip

    def items(label, i, message, kinds_of_case, by_sid):
        return [
            {"event": kind, "email": contact.email, "timestamp": 1_700_000_000 + n, "sg_event_id": f"{label}-{i}-{n}",
             "sg_message_id": f"{label}-{i}", "status": "5.1.1" if kind == "bounce" else "", "reason": kind,
             **({} if by_sid else {"mh_message_id": str(message.pk)})}
            for n, kind in enumerate(kinds_of_case)
        ]  # fmt: skip

    batch, single = messages("batch"), messages("single")
    everything = [
        e for i, (m, c) in enumerate(zip(batch, cases, strict=True)) for e in items("batch", i, m, c[1], c[2])
    ]
    assert sendgrid_post(client, path, everything, private).status_code == 200
    for i, (m, case) in enumerate(zip(single, cases, strict=True)):
        for item in items("single", i, m, case[1], case[2]):
            assert sendgrid_post(client, path, [item], private).status_code == 200

    def outcome(m):
        m.refresh_from_db()
        return m.status, m.delivered_at, m.error_code, m.error_message, m.provider_message_id.split("-")[-1]

    moved = 0
    for case, b, s in zip(cases, batch, single, strict=True):
        assert outcome(b) == outcome(s), case
        moved += b.status != case[0]
    assert moved > len(cases) // 3  # the cases do move messages
