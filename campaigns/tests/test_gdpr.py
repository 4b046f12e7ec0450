"""A contact's messages and provider events are part of their GDPR export and go with their erasure."""

from urllib.parse import urlencode

from django.utils import timezone

from audiences import services
from audiences.models import Contact
from campaigns.models import Message
from campaigns.tests.factories import account
from channels.models import ProviderEvent, WebhookLog


def test_export_lists_messages_and_events_and_erase_scrubs_them(brand_a):
    sms = account(brand_a, "sms")
    person = Contact.objects.create(brand=brand_a, phone="+14155550123", email="p@x.test")
    other = Contact.objects.create(brand=brand_a, phone="+14155550999")
    message = Message.objects.create(brand=brand_a, contact=person, channel="sms", account=sms, status="delivered",
                                     address=person.phone, context={"order": "A-1"})  # fmt: skip
    kept = Message.objects.create(brand=brand_a, contact=other, channel="sms", account=sms, address=other.phone)
    event = dict(account=sms, brand=brand_a, provider=sms.provider, channel="sms", occurred_at=timezone.now())
    ProviderEvent.objects.create(**event, event_type="delivered", provider_event_id="SM1:delivered",
                                 message_id=str(message.pk), address=person.phone)  # fmt: skip
    ProviderEvent.objects.create(**event, event_type="inbound", provider_event_id="SM2:inbound", address=person.phone)
    ProviderEvent.objects.create(**event, event_type="delivered", provider_event_id="SM3:delivered",
                                 message_id=str(kept.pk), address=other.phone)  # fmt: skip
    body = urlencode({"MessageSid": "SM2", "From": person.phone, "Body": "STOP"})
    WebhookLog.objects.create(brand=brand_a, account=sms, provider="twilio", kind="inbound", path="/x", body=body,
                              headers={"X-Twilio-Signature": "s"}, verdict="accepted")  # fmt: skip
    WebhookLog.objects.create(brand=brand_a, account=sms, provider="twilio", kind="inbound", path="/x",
                              body=urlencode({"From": other.phone}), verdict="accepted")  # fmt: skip

    export = services.contact_export(person)
    assert [(m["id"], m["address"], m["status"]) for m in export["messages"]] == [
        (message.pk, "+14155550123", "delivered")
    ]
    assert sorted(e["type"] for e in export["events"]) == ["delivered", "inbound"]

    services.contact_erase(person, actor="test")
    message.refresh_from_db()
    assert (message.address, message.context, message.status) == ("", {}, "delivered")  # counts still add up
    assert not ProviderEvent.objects.filter(address=person.phone).exists()
    assert ProviderEvent.objects.filter(address=other.phone).count() == 1  # nobody else's data is touched
    assert not WebhookLog.objects.filter(body__contains="4155550123").exists()
    assert WebhookLog.objects.filter(body__contains="4155550999").count() == 1
    kept.refresh_from_db()
    assert kept.address == other.phone
