from django.urls import reverse

from campaigns.models import MessageTemplate
from marketing_hub.roles import Role
from marketing_hub.tests.factories import member


def _form(brand, **content):
    data = {
        "brand": brand.pk,
        "name": "Welcome",
        "purpose": "marketing",
        "use_brand_layout": "on",
        "contents-TOTAL_FORMS": "1",
        "contents-INITIAL_FORMS": "0",
        "contents-MIN_NUM_FORMS": "1",
        "contents-MAX_NUM_FORMS": "1000",
        "contents-0-locale": "en",
        "contents-0-whatsapp_variables": "{}",
    }
    data.update({f"contents-0-{key}": value for key, value in content.items()})
    return data


def test_admin_refuses_a_template_with_a_syntax_error_naming_field_and_line(client, brand_a):
    client.force_login(member(brand_a, Role.MARKETER, username="m"))
    url = reverse("admin:campaigns_messagetemplate_add")
    response = client.post(url, _form(brand_a, sms_text="Hi\n{{ contact.first_name "))
    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.errors[0]
    assert "line 2" in errors["sms_text"][0]
    assert not MessageTemplate.objects.exists()


def test_admin_saves_and_warns_about_unknown_variables(client, brand_a, brand_b):
    client.force_login(member(brand_a, Role.MARKETER, username="m"))
    url = reverse("admin:campaigns_messagetemplate_add")
    response = client.post(url, _form(brand_a, sms_text="Hi {{ coupon_code }}"), follow=True)
    assert MessageTemplate.objects.filter(brand=brand_a, name="Welcome").exists()
    assert any("coupon_code" in str(m) for m in response.context["messages"])
    # The other brand is not a valid choice.
    response = client.post(url, {**_form(brand_b, sms_text="x"), "name": "Other"})
    assert not MessageTemplate.objects.filter(name="Other").exists()


def test_preview_for_a_chosen_contact_counts_sms_segments_and_sends_a_test(client, brand_a, sandbox):
    from audiences.models import Contact
    from campaigns.tests.factories import account, template

    client.force_login(member(brand_a, Role.MARKETER, username="m"))
    offer = template(brand_a)
    ann = Contact.objects.create(brand=brand_a, first_name="Ann", phone="+14155550123")
    sms = account(brand_a, "sms", base_url=sandbox.url)
    url = reverse("admin:campaigns_template_preview", args=[offer.pk])
    page = client.get(url, {"contact": ann.pk, "channel": "sms"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "Hi Ann, 20% off today" in text and "Reply STOP to opt out" in text
    assert "SMS: GSM-7, 1 segment" in text
    client.post(url, {"contact": ann.pk, "channel": "sms", "to": "+14155550199", "account": sms.pk})
    (sent,) = sandbox.requests
    assert sent["to"] == "+14155550199" and sent["body"].startswith("Hi Ann")


def test_preview_of_another_brands_template_is_404(client, brand_a, brand_b):
    from campaigns.tests.factories import template

    client.force_login(member(brand_a, Role.MARKETER, username="m"))
    theirs = template(brand_b)
    assert client.get(reverse("admin:campaigns_template_preview", args=[theirs.pk])).status_code == 404


def test_preview_shows_where_the_preferences_link_goes(client, brand_a):
    from audiences.models import Contact
    from campaigns.models import TemplateContent
    from campaigns.tests.factories import template

    client.force_login(member(brand_a, Role.MARKETER, username="m"))
    offer = template(brand_a)
    TemplateContent.objects.filter(template=offer).update(sms_text="Choose what you get: {{ preferences_url }}")
    ann = Contact.objects.create(brand=brand_a, first_name="Ann", phone="+14155550123")
    page = client.get(
        reverse("admin:campaigns_template_preview", args=[offer.pk]), {"contact": ann.pk, "channel": "sms"}
    )
    assert "Choose what you get: https://example.invalid/p/preview/" in page.content.decode()
