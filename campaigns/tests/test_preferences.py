"""The preferences page behind ``{{ preferences_url }}``: every channel the contact has an address on,
its consent, and changes made only through the audiences services, with the page as their source."""

import re
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from django.core import signing

from audiences.models import Consent, ConsentEvent, Contact
from audiences.services import consent_set, contact_erase, suppression_add
from campaigns import dispatcher, sender, services
from campaigns.models import Message, TemplateContent
from campaigns.tests.factories import account, campaign, contacts, template

pytestmark = pytest.mark.django_db


@pytest.fixture
def person(brand_a):
    """Email subscribed, SMS unsubscribed, WhatsApp never asked; no Telegram chat."""
    contact = Contact.objects.create(brand=brand_a, email="ann@example.test", phone="+14155550123",
                                     whatsapp="+14155550124", first_name="Ann")  # fmt: skip
    consent_set(contact, "email", "subscribed", "form", "test")
    consent_set(contact, "sms", "unsubscribed", "keyword STOP", "test")
    return contact


def _message(person, channel="email") -> Message:
    return Message.objects.create(brand=person.brand, contact=person, channel=channel,
                                  address=person.address_for(channel))  # fmt: skip


def _url(message) -> str:
    return f"/p/{sender.preferences_token(message)}/"


def _consents(contact) -> dict[str, tuple[str, str]]:
    return {c.channel: (c.status, c.source) for c in Consent.objects.filter(contact=contact)}


def _boxes(page) -> dict[str, str]:
    """channel -> the attributes after its value ("checked", "disabled" or "") of each checkbox."""
    found = re.findall(r'<input type="checkbox" name="channel" value="(\w+)"([^>]*)>', page.content.decode())
    return {channel: attributes.strip() for channel, attributes in found}


@pytest.mark.django_db(transaction=True)
def test_the_sent_preferences_url_is_not_the_unsubscribe_url_and_opens_the_page(brand_a, sandbox, client, settings):
    settings.PUBLIC_BASE_URL = "https://hub.test"
    contact_list, _ = contacts(brand_a, 1, consent=("sms",))
    offer = template(brand_a)
    TemplateContent.objects.filter(template=offer).update(
        sms_text="Hi {{ contact.first_name }} stop: {{ unsubscribe_url }} choose: {{ preferences_url }}"
    )
    services.launch(campaign(brand_a, contact_list, [(account(brand_a, "sms", base_url=sandbox.url), offer)]), "t")
    dispatcher.dispatch(enqueue=lambda _channel, ids: sender.send_batch(ids))

    (sent,) = sandbox.requests
    unsubscribe_url, preferences_url = re.search(r"stop: (\S+) choose: (\S+)", sent["body"]).groups()
    assert unsubscribe_url.startswith("https://hub.test/u/") and preferences_url.startswith("https://hub.test/p/")
    assert urlsplit(unsubscribe_url).path.split("/")[2] != urlsplit(preferences_url).path.split("/")[2]
    page = client.get(urlsplit(preferences_url).path)
    assert page.status_code == 200 and "Messages from Brand A" in page.content.decode()
    assert _boxes(page) == {"sms": "checked", "whatsapp": "", "email": ""}


def test_a_preferences_token_is_made_only_for_templates_that_show_it_and_is_djangos_signed_token(
    brand_a, monkeypatch, settings
):
    monkeypatch.setattr(signing.time, "time", lambda: 1_790_000_000.7)
    settings.PUBLIC_BASE_URL = "https://hub.test"
    plain = template(brand_a)  # shows only the unsubscribe link
    showing = template(brand_a, name="With preferences")
    TemplateContent.objects.filter(template=showing).update(whatsapp_variables={"1": "{{ preferences_url }}"})
    message = SimpleNamespace(pk=123456, contact_id=654321, channel="email", template=plain)
    assert set(sender.links_for(message)) == {"unsubscribe_url"}
    message.template = showing
    token = signing.dumps([123456, 654321], salt=sender.PREFERENCES_SALT)
    assert sender.links_for(message)["preferences_url"] == f"https://hub.test/p/{token}/"
    assert sender.preferences_token(message) == token


def test_get_lists_each_channel_with_an_address_and_its_consent_escaped(brand_a, person, client):
    brand_a.name = "Ben & <Jerry>"
    brand_a.save()
    consent_set(person, "telegram", "subscribed", "form", "test")  # consent but no chat id: not shown
    page = client.get(_url(_message(person)))
    text = page.content.decode()
    assert page.status_code == 200 and "Messages from Ben &amp; &lt;Jerry&gt;" in text
    assert _boxes(page) == {"email": "checked", "sms": "", "whatsapp": ""}
    assert "Email</label> (subscribed)" in text and "SMS</label> (not subscribed)" in text


def test_post_unsubscribes_the_unchecked_channel_and_leaves_the_others(person, client):
    consent_set(person, "sms", "subscribed", "form", "test")
    message = _message(person)
    page = client.post(_url(message), {"channel": ["sms"]})
    assert page.status_code == 200 and _boxes(page)["email"] == ""
    consents = _consents(person)
    assert consents["email"] == ("unsubscribed", f"preferences page: message {message.pk}")
    assert consents["sms"] == ("subscribed", "form")
    assert consents["whatsapp"] == ("unsubscribed", f"preferences page: message {message.pk}")
    event = ConsentEvent.objects.filter(contact=person, channel="email").latest("id")
    assert (event.status, event.actor) == ("unsubscribed", "contact")


def test_post_resubscribes_with_the_page_as_source_and_email_by_a_proven_mailbox_only(person, client):
    unsubscribe_all = client.post(_url(_message(person, "sms")), {})
    assert unsubscribe_all.status_code == 200
    by_sms = _message(person, "sms")
    client.post(_url(by_sms), {"channel": ["sms", "email", "whatsapp"]})
    consents = _consents(person)
    source = f"preferences page: message {by_sms.pk}"
    assert consents["sms"] == ("subscribed", source) and consents["whatsapp"] == ("subscribed", source)
    assert consents["email"] == ("pending", source)  # an SMS link does not prove the mailbox: double opt-in
    event = ConsentEvent.objects.filter(contact=person, channel="sms").latest("id")
    assert (event.status, event.source, event.actor) == ("subscribed", source, "contact")

    by_email = _message(person, "email")
    client.post(_url(by_email), {"channel": ["sms", "email", "whatsapp"]})
    assert _consents(person)["email"] == ("subscribed", f"preferences page: message {by_email.pk}")


def test_a_suppressed_channel_is_shown_blocked_and_left_alone(brand_a, person, client):
    suppression_add(brand_a, "sms", person.phone, "stop")
    message = _message(person)
    assert _boxes(client.get(_url(message)))["sms"] == "disabled"
    client.post(_url(message), {"channel": ["email", "sms"]})
    assert _consents(person)["sms"] == ("unsubscribed", "keyword STOP")


def test_forged_other_salt_and_stale_tokens_are_404_and_change_nothing(person, client):
    message = _message(person)
    before = _consents(person), ConsentEvent.objects.count()
    good = sender.preferences_token(message)
    forged = signing.dumps([message.pk, person.pk], salt="someone.else", compress=True)
    unsubscribe_token = sender.unsubscribe_token(message)
    other_contact = signing.dumps([message.pk, person.pk + 1], salt=sender.PREFERENCES_SALT, compress=True)
    assert client.get(f"/p/{good}/").status_code == 200  # the page is there for the right token
    for token in (good[:-2] + "xx", forged, unsubscribe_token, other_contact, "nonsense"):
        assert client.get(f"/p/{token}/").status_code == 404
        assert client.post(f"/p/{token}/", {"channel": []}).status_code == 404
    Message.objects.filter(pk=message.pk).delete()
    assert client.post(f"/p/{good}/", {"channel": []}).status_code == 404
    assert (_consents(person), ConsentEvent.objects.count()) == before


def test_an_erased_contact_gets_404_and_nothing_changes(person, client):
    url = _url(_message(person))
    assert client.get(url).status_code == 200
    contact_erase(person, actor="test")
    before = _consents(person), ConsentEvent.objects.count()
    for page in (client.get(url), client.post(url, {"channel": ["email"]})):
        assert page.status_code == 404 and "ann@" not in page.content.decode()
    assert (_consents(person), ConsentEvent.objects.count()) == before
