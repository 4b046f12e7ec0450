"""The transactional API's refusals: suppressed addresses, marketing templates, an Idempotency-Key reused."""

import pytest

from audiences.models import Suppression
from campaigns.models import Message
from campaigns.tests.factories import account, contacts, template


@pytest.fixture
def request_body(brand_a):
    """A valid request: a consented contact, an email account and a transactional template."""
    _, people = contacts(brand_a, 2)
    email = account(brand_a, "email")
    receipt = template(brand_a, name="Receipt", purpose="transactional")
    return {"contact": people[0].pk, "template": receipt.pk, "account": email.pk, "context": {"order": "A-17"}}


def _post(client, body, key="order-A-17"):
    return client.post("/api/messages/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_a_suppressed_address_is_refused(brand_a, key_client, request_body):
    contact = brand_a.contacts.get(pk=request_body["contact"])
    Suppression.objects.create(brand=brand_a, channel="email", address=contact.email, reason="hard_bounce")
    refused = _post(key_client, request_body)
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == "contact: email address is suppressed."
    assert not Message.objects.exists()


def test_a_marketing_template_is_refused(brand_a, key_client, request_body):
    offer = template(brand_a, name="Offer", purpose="marketing")
    refused = _post(key_client, {**request_body, "template": offer.pk})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["message"] == "template: a marketing template; the transactional API sends transactional templates"
    assert list(error["fields"]) == ["template"]
    assert not Message.objects.exists()


def test_an_idempotency_key_reused_for_another_request_is_refused(brand_a, key_client, request_body):
    first = _post(key_client, request_body)
    assert first.status_code == 201
    other_contact = brand_a.contacts.exclude(pk=request_body["contact"]).get().pk
    other_template = template(brand_a, name="Shipped", purpose="transactional").pk
    other_account = account(brand_a, "sms").pk
    for change in ({"contact": other_contact}, {"template": other_template}, {"account": other_account},
                   {"context": {"order": "A-18"}}):  # fmt: skip
        refused = _post(key_client, {**request_body, **change})
        assert refused.status_code == 409, change
        assert refused.json()["error"]["fields"] == {"Idempotency-Key": ["used for a different request"]}
    again = _post(key_client, request_body)  # the same request again: the first message, nothing new
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert Message.objects.count() == 1
