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
