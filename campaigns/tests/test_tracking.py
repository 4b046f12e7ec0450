"""Tracked links (``{{ track("https://…") }}``) and the open pixel: signed, redirected, recorded once each."""

import re
from urllib.parse import urlsplit

import pytest
from django.core import signing
from django.core.exceptions import ValidationError
from django.utils import timezone

from audiences.models import Contact
from campaigns import sender, tracking
from campaigns.models import Message, MessageTemplate, TemplateContent
from campaigns.rendering import render_message
from campaigns.templating import TemplateError, check_template, render
from campaigns.tests.factories import account
from channels.models import ProviderEvent

TARGET = "https://shop.example/spring?utm=x&b=2"
CONTACT = {"first_name": "Ada", "email": "ada@example.test", "locale": "en", "attributes": {"link": TARGET}}
LINKS = {"unsubscribe_url": "https://hub.test/u/abc/", "preferences_url": "https://hub.test/u/abc/"}


@pytest.fixture(autouse=True)
def _public_url(settings):
    settings.PUBLIC_BASE_URL = "https://hub.test"


@pytest.fixture
def spring(brand_a):
    template = MessageTemplate.objects.create(brand=brand_a, name="Spring")
    TemplateContent.objects.create(
        template=template, locale="en", email_subject="Hi",
        email_html=f'<p>Hello</p><a href="{{{{ track("{TARGET}") }}}}">Shop</a>',
        sms_text=f'Shop: {{{{ track("{TARGET}") }}}}', whatsapp_text="{{ track(contact.attributes.link) }}",
        telegram_text="Hi", telegram_button_text="Shop", telegram_button_url=f'{{{{ track("{TARGET}") }}}}',
    )  # fmt: skip
    return template


@pytest.fixture
def message(brand_a):
    email = account(brand_a, "email")
    ada = Contact.objects.create(brand=brand_a, email="ada@example.test")
    return Message.objects.create(brand=brand_a, contact=ada, channel="email", account=email, status="sent",
                                  address=ada.email, provider_message_id="sg-1.0")  # fmt: skip


def _token(url: str, prefix: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == "https://hub.test" and parts.path.startswith(prefix)
    return parts.path[len(prefix) :]


def _hrefs(html: str) -> list[str]:
    return [value.replace("&amp;", "&") for value in re.findall(r'href="([^"]+)"', html)]


def test_track_renders_a_signed_link_that_carries_the_message_and_its_target(spring):
    rendered = render_message(template=spring, channel="email", contact=CONTACT, links=LINKS, message_id=4242)
    (tracked,) = [href for href in _hrefs(rendered.html) if "/c/" in href]
    token = _token(tracked, "/c/").rstrip("/")
    assert signing.Signer(salt=tracking.CLICK_SALT).unsign_object(token) == [4242, TARGET]
    assert f"({tracked})" in rendered.text  # the text part keeps the tracked link too
    # Every channel's templates have it, the value of a contact's attribute included.
    sms = render_message(template=spring, channel="sms", contact=CONTACT, links=LINKS, message_id=4242)
    whatsapp = render_message(template=spring, channel="whatsapp", contact=CONTACT, links=LINKS, message_id=4242)
    telegram = render_message(template=spring, channel="telegram", contact=CONTACT, links=LINKS, message_id=4242)
    assert tracked in sms.text and whatsapp.text == tracked and telegram.button["url"] == tracked
    # A preview or a test send has no message: the link is its target itself, and there is no pixel.
    preview = render_message(template=spring, channel="email", contact=CONTACT, links=LINKS)
    assert f'href="{TARGET.replace("&", "&amp;")}"' in preview.html and "/o/" not in preview.html


def test_a_marketing_email_gets_the_open_pixel_and_no_other_channel_or_purpose_does(spring):
    rendered = render_message(template=spring, channel="email", contact=CONTACT, links=LINKS, message_id=4242)
    (pixel,) = re.findall(r'<img src="([^"]+)" width="1" height="1"', rendered.html)
    assert rendered.html.endswith("</body></html>") and rendered.html.index(pixel) > rendered.html.index("Shop")
    assert signing.Signer(salt=tracking.OPEN_SALT).unsign(_token(pixel, "/o/").removesuffix(".gif")) == "4242"
    for channel in ("sms", "whatsapp", "telegram"):
        other = render_message(template=spring, channel=channel, contact=CONTACT, links=LINKS, message_id=4242)
        assert "/o/" not in f"{other.text}{other.button}"
    spring.purpose = "transactional"
    receipt = render_message(template=spring, channel="email", contact=CONTACT, links=LINKS, message_id=4242)
    assert "/c/" in receipt.html and "/o/" not in receipt.html


def test_the_cheap_signer_makes_djangos_own_tokens(settings):
    for secret in ("first-secret-key-for-the-test", "second-secret-key-for-the-test"):
        settings.SECRET_KEY = secret
        for url in (TARGET, "https://x.test/" + "a" * 300):
            expected = signing.Signer(salt=tracking.CLICK_SALT).sign_object([7, url], compress=True)
            assert tracking.click_token(7, url) == expected
        assert tracking.open_token(7) == signing.Signer(salt=tracking.OPEN_SALT).sign("7")


def test_a_click_redirects_and_records_one_event_per_click(client, message):
    url = f"/c/{tracking.click_token(message.pk, TARGET)}/"
    response = client.get(url)
    assert response.status_code == 302 and response["Location"] == TARGET
    (event,) = ProviderEvent.objects.all()
    assert (event.provider, event.event_type, event.channel, event.message_id, event.url, event.address) == (
        "hub", "clicked", "email", str(message.pk), TARGET, "ada@example.test"
    )  # fmt: skip
    assert (event.account_id, event.brand_id, event.provider_message_id) == (message.account_id, message.brand_id,
                                                                            "sg-1.0")  # fmt: skip
    assert event.provider_event_id.startswith("clicked:")
    assert client.get(url).status_code == 302
    assert client.head(url).status_code == 302  # a link checker's HEAD redirects but is no click
    assert ProviderEvent.objects.filter(event_type="clicked", message_id=str(message.pk)).count() == 2


def test_forged_foreign_and_unsafe_tokens_are_refused_without_a_redirect(client, message):
    good = tracking.click_token(message.pk, TARGET)
    tampered = good[:-3] + ("AAA" if good[-3:] != "AAA" else "BBB")
    other_payload = tracking.click_token(message.pk + 1, TARGET).split(":")[0] + ":" + good.split(":")[1]
    unsubscribe = sender.unsubscribe_token(message)
    javascript = signing.Signer(salt=tracking.CLICK_SALT).sign_object([message.pk, "javascript:alert(1)"])
    relative = signing.Signer(salt=tracking.CLICK_SALT).sign_object([message.pk, "//evil.test/x"])
    opened = tracking.open_token(message.pk)
    for token in (tampered, other_payload, unsubscribe, javascript, relative, opened, "nonsense"):
        response = client.get(f"/c/{token}/")
        assert response.status_code == 404 and "Location" not in response, token
    assert not ProviderEvent.objects.exists()
    assert client.get(f"/c/{good}/")["Location"] == TARGET  # the one good token among them
    assert ProviderEvent.objects.count() == 1


def test_a_deleted_message_still_redirects_but_records_nothing(client, message):
    url = f"/c/{tracking.click_token(message.pk, TARGET)}/"
    erased = Message.objects.create(brand=message.brand, channel="email", account=message.account,
                                    contact=Contact.objects.create(brand=message.brand, erased_at=timezone.now()))  # fmt: skip
    message.delete()
    assert client.get(url)["Location"] == TARGET
    assert client.get(f"/c/{tracking.click_token(erased.pk, TARGET)}/")["Location"] == TARGET
    assert client.get(f"/o/{tracking.open_token(erased.pk)}.gif").status_code == 200
    assert not ProviderEvent.objects.exists()


def test_the_pixel_is_the_gif_for_any_token_and_records_opens_of_good_ones(client, message):
    good = f"/o/{tracking.open_token(message.pk)}.gif"
    bad = [f"/o/{tracking.open_token(message.pk)[:-2]}xx.gif", f"/o/{sender.unsubscribe_token(message)}.gif",
           f"/o/{tracking.click_token(message.pk, TARGET)}.gif", "/o/nothing.gif"]  # fmt: skip
    for url in [good, good, *bad]:
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "image/gif"
        assert response.content == tracking.PIXEL_GIF and len(response.content) == 43
        assert "no-store" in response["Cache-Control"] and "no-cache" in response["Cache-Control"]
    events = ProviderEvent.objects.filter(message_id=str(message.pk))
    assert [(e.event_type, e.provider, e.url) for e in events] == [("opened", "hub", "")] * 2  # every open
    assert ProviderEvent.objects.count() == 2


def test_a_literal_url_that_is_not_http_is_refused_on_save(brand_a):
    for source in ('{{ track("javascript:alert(1)") }}', '<a href="{{ track(\'/spring\') }}">x</a>',
                   '{{ track("mailto:a@b.test") }}', '{{ track("https://") }}', "{{ track() }}"):  # fmt: skip
        (error,) = check_template(source, field_name="email_html").errors
        assert "track()" in str(error) and error.field == "email_html" and error.line == 1
    assert "'javascript:alert(1)'" in str(check_template('{{ track("javascript:alert(1)") }}').errors[0])
    ok = check_template('{{ track("https://shop.example/?a=1") }} {{ track(contact.attributes.link) }}')
    assert ok.errors == [] and ok.warnings == []
    content = TemplateContent(template=MessageTemplate.objects.create(brand=brand_a, name="x"), locale="en",
                              sms_text='{{ track("javascript:alert(1)") }}')  # fmt: skip
    with pytest.raises(ValidationError, match="javascript"):
        content.clean()


def test_a_url_known_only_when_rendering_is_checked_then():
    context = {"contact": {"attributes": {"link": "javascript:alert(1)"}}, "track": tracking.Tracker(1)}
    with pytest.raises(TemplateError, match="javascript:alert") as caught:
        render("{{ track(contact.attributes.link) }}", context, field_name="email_html")
    assert caught.value.field == "email_html"


@pytest.mark.parametrize(
    "source",
    [
        "{{ track.__globals__ }}",
        "{{ track.__call__.__globals__ }}",
        "{{ track._message_id }}",
        "{{ track.__self__ }}",
        "{{ track.__class__.__init__.__globals__ }}",
        "{{ track.__module__ }}",
    ],
)
def test_the_sandbox_still_refuses_attribute_escapes_through_track(source):
    for context in ({}, {"track": tracking.Tracker(1)}):
        assert render('{{ track("https://a.test/") }}', context).startswith(("https://a.test/", "https://hub.test/c/"))
        try:
            output = render(source, context)
        except TemplateError as exc:
            assert "unsafe" in str(exc)
        else:
            assert output == ""


@pytest.mark.django_db(transaction=True)
def test_an_email_sent_through_the_sandbox_has_the_pixel_and_a_tracked_link_that_works(brand_a, sandbox, client):
    from campaigns import dispatcher, services
    from campaigns.tests.factories import campaign, contacts, template

    contact_list, (ada,) = contacts(brand_a, 1, consent=("email",))
    offer = template(brand_a)
    offer.contents.update(email_html=f'<p>Spring</p><a href="{{{{ track("{TARGET}") }}}}">Shop</a>')
    spring = campaign(brand_a, contact_list, [(account(brand_a, "email", base_url=sandbox.url), offer)])
    services.launch(spring, "test")
    dispatcher.dispatch(enqueue=lambda _channel, ids: sender.send_batch(ids))
    (sent,) = sandbox.requests
    message = Message.objects.get(campaign=spring, status="sent")
    html = sent["content"]["text/html"]
    (tracked,) = [href for href in _hrefs(html) if "/c/" in href]
    (pixel,) = re.findall(r'<img src="(https://hub\.test/o/[^"]+\.gif)"', html)
    assert tracked in sent["content"]["text/plain"]
    response = client.get(urlsplit(tracked).path)
    assert response.status_code == 302 and response["Location"] == TARGET
    assert client.get(urlsplit(pixel).path).content == tracking.PIXEL_GIF
    events = ProviderEvent.objects.order_by("id")
    assert [(e.event_type, e.message_id, e.address, e.url) for e in events] == [
        ("clicked", str(message.pk), ada.email, TARGET), ("opened", str(message.pk), ada.email, ""),
    ]  # fmt: skip
    assert all(e.provider_message_id == message.provider_message_id != "" for e in events)


def test_the_admin_preview_and_test_send_link_straight_to_the_target(client, brand_a, spring, sandbox):
    from django.urls import reverse

    from marketing_hub.roles import Role
    from marketing_hub.tests.factories import member

    client.force_login(member(brand_a, Role.MARKETER, username="m"))
    ada = Contact.objects.create(brand=brand_a, first_name="Ada", phone="+14155550123")
    url = reverse("admin:campaigns_template_preview", args=[spring.pk])
    page = client.get(url, {"contact": ada.pk, "channel": "sms"})
    assert page.status_code == 200 and f"Shop: {TARGET.replace('&', '&amp;')}" in page.content.decode()
    client.post(url, {"contact": ada.pk, "channel": "sms", "to": "+14155550199",
                      "account": account(brand_a, "sms", base_url=sandbox.url).pk})  # fmt: skip
    (sent,) = sandbox.requests
    assert sent["body"].startswith(f"Shop: {TARGET} ")


@pytest.mark.parametrize(
    "url",
    ["https://x.io/", "https://shop.example/spring", "https://shop.example.com/spring-sale?utm_source=sms&utm_campaign=s",
     "https://brand.example/p/8f3a9c2e7b1d4f60?utm_source=newsletter&utm_medium=sms&utm_campaign=spring_sale_2026&utm_content=b"],
)  # fmt: skip
def test_an_sms_estimate_counts_a_tracked_link_at_its_length_never_under(url, settings):
    """An SMS counter that took a tracked link for ten letters would promise one segment and bill three."""
    from campaigns.templating import tracked_link_width
    from campaigns.tracking import Tracker

    settings.PUBLIC_BASE_URL = "https://hub.example.com"
    real = len(Tracker(987654321)(url))
    estimate = tracked_link_width(len(url), len(settings.PUBLIC_BASE_URL))
    assert real <= estimate <= real * 1.1 + 6
    # A repetitive URL compresses in the token: the estimate stays an upper bound.
    repetitive = "https://brand.example/" + "long/" * 40
    assert len(Tracker(987654321)(repetitive)) <= tracked_link_width(len(repetitive), len(settings.PUBLIC_BASE_URL))
