"""In Chromium: the template editor's live SMS counter gives the same encoding and segments as the
server's rules, for the text a marketer types."""

import pytest

from campaigns.templating import sms_estimate_text
from campaigns.tests.factories import template
from channels.sms import sms_segments
from marketing_hub.roles import Role
from marketing_hub.tests.factories import member

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TEXTS = [
    "",
    "Spring sale: 20% off today",
    "Hi {{ contact.first_name }}, 20% off today at {{ brand.name }}",
    "{% if contact.first_name %}Hi {{ contact.first_name }}{% endif %}{# greeting #}, your code is {{ code }}",
    "Prices in € and {braces} [brackets] ~tilde~ ^caret^ |pipe| \\ backslash",
    "a" * 138,  # 138 + " Reply STOP to opt out" = 160: one segment
    "a" * 139,  # 161: two
    "€" * 69,  # the extension table counts twice: 138 + 22 = 160, one segment
    "€" * 70,  # 162: two
    "Ünïcödé: ł and ğ make it UCS-2",
    "Emoji 🎉 count twice in UTF-16 " + "b" * 40,
    "Already says reply stop to OPT OUT   ",
    "Line one\nline two\r\nand a trailing space   ",
    'Spring sale: {{ track("https://shop.example/spring?utm_source=sms") }}',
    "Your link: {{ track(contact.attributes.site) }} and {{ track('https://x.io/') }}",
]


def test_live_counter_matches_the_servers_count(live_server, page, screenshot, brand_a):
    member(brand_a, Role.MARKETER, username="marketer")
    offer = template(brand_a, name="Spring offer")
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", "pw-for-tests-1")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/campaigns/messagetemplate/{offer.pk}/change/")
    counter = page.locator("#contents-0 .field-sms_text .mh-sms-counter")
    for text in TEXTS:
        page.fill("#id_contents-0-sms_text", text)
        expected = sms_segments(sms_estimate_text(text, brand=brand_a))
        shown = (counter.get_attribute("data-encoding"), int(counter.get_attribute("data-segments")))
        assert shown == expected, text
    page.fill("#id_contents-0-sms_text", "Hi")
    assert counter.inner_text().startswith("GSM-7 · 1 segment · ")
    screenshot(page, "admin-template-sms-counter")
