"""The audiences API: normalization, per-item bulk errors, consent history, GDPR, segments, tenancy."""

from django.urls import reverse

from audiences.models import Consent, ConsentEvent, Contact, ContactList, Segment, Suppression
from marketing_hub.roles import Role
from marketing_hub.tests.factories import api_key


def test_create_normalizes_and_duplicate_email_is_a_conflict_naming_the_field(key_client, brand_a):
    brand_a.default_region = "DE"
    brand_a.save()
    response = key_client.post(
        "/api/contacts/", {"email": "Ann@Example.COM", "phone": "0151 2345 6789", "time_zone": "Europe/Berlin"}
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["email"] == "ann@example.com"
    assert body["phone"] == body["whatsapp"] == "+4915123456789"
    assert body["country"] == "DE"
    again = key_client.post("/api/contacts/", {"email": "ann@example.com"})
    assert again.status_code == 409
    assert again.json()["error"]["fields"] == {"email": ["Another contact of this brand already has this value."]}


def test_bad_fields_are_named_and_nothing_is_stored(key_client):
    response = key_client.post("/api/contacts/", {"email": "not-an-email", "time_zone": "Mars/Olympus"})
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert set(fields) == {"email", "time_zone"}
    assert not Contact.objects.exists()


def test_bulk_upsert_stores_the_good_items_and_answers_each_bad_one(key_client, brand_a):
    items = [
        {"email": "a@x.test", "first_name": "A", "attributes": {"tier": "gold"}},
        {"email": "broken", "first_name": "B"},
        {"external_id": "c-1", "phone": "+14155550100", "consent": {"sms": "subscribed"}},
        {"first_name": "nobody"},
        {"email": "a@x.test", "last_name": "Again"},  # the same person as item 0, later in the request
    ]
    response = key_client.post("/api/contacts/bulk/", {"items": items}, format="json")
    assert response.status_code == 207
    body = response.json()
    assert [r["status"] for r in body["results"]] == ["created", "error", "created", "error", "updated"]
    assert body["results"][1]["errors"] == {"email": "'broken' is not a valid email address"}
    assert Contact.objects.filter(brand=brand_a).count() == 2
    a = Contact.objects.get(email="a@x.test")
    assert (a.first_name, a.last_name, a.attributes) == ("A", "Again", {"tier": "gold"})
    assert Consent.objects.get(contact__external_id="c-1").status == "subscribed"

    again = key_client.post("/api/contacts/bulk/", {"items": [items[0], items[2]]}, format="json")
    assert again.status_code == 200
    assert again.json()["unchanged"] == 2
    assert ConsentEvent.objects.count() == 1  # no new history for an unchanged consent


def test_consent_history_double_opt_in_and_unsubscribe(key_client, client, brand_a):
    contact = Contact.objects.create(brand=brand_a, email="d@x.test")
    url = f"/api/contacts/{contact.pk}/consent/"
    response = key_client.post(url, {"channel": "email", "status": "subscribed", "double_opt_in": True})
    assert response.json()["status"] == "pending"
    token = response.json()["confirmation_token"]
    assert client.get(reverse("audiences-confirm-email", args=[token + "x"])).status_code == 404
    assert client.get(reverse("audiences-confirm-email", args=[token])).status_code == 200
    assert Consent.objects.get(contact=contact).status == "subscribed"
    key_client.post(f"/api/contacts/{contact.pk}/unsubscribe/", {"channel": "email"})
    history = list(ConsentEvent.objects.filter(contact=contact).order_by("id").values_list("status", "source"))
    assert history == [("pending", "api"), ("subscribed", "form:double-opt-in"), ("unsubscribed", "api")]


def test_gdpr_export_and_erase(key_client, brand_a):
    contact = Contact.objects.create(brand=brand_a, email="e@x.test", phone="+14155550101", first_name="Eve")
    ContactList.objects.create(brand=brand_a, name="VIP").contacts.add(contact)
    export = key_client.get(f"/api/contacts/{contact.pk}/export/").json()
    assert export["profile"]["email"] == "e@x.test" and export["lists"] == ["VIP"]

    viewer = key_client.__class__()
    viewer.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key(brand_a, Role.VIEWER)}")
    assert viewer.post(f"/api/contacts/{contact.pk}/erase/").status_code == 403  # viewers only read
    assert key_client.post(f"/api/contacts/{contact.pk}/erase/").status_code == 200
    contact.refresh_from_db()
    assert contact.email is None and contact.first_name == "" and contact.erased_at
    assert set(Suppression.objects.values_list("channel", "address", "reason")) >= {
        ("email", "e@x.test", "erased"),
        ("sms", "+14155550101", "erased"),
    }
    # Never re-imported as new.
    response = key_client.post("/api/contacts/bulk/", {"items": [{"email": "e@x.test"}]}, format="json")
    assert response.json()["results"][0]["errors"] == {"email": "this address was erased at the contact's request"}
    assert Contact.objects.count() == 1


def test_segments_refuse_malformed_rules_with_the_path_and_estimate_and_preview(key_client, brand_a):
    bad = {"name": "Bad", "rules": {"and": [{"field": "attributes.tier", "op": "resembles", "value": "x"}]}}
    response = key_client.post("/api/segments/", bad, format="json")
    assert response.status_code == 400
    assert "rules.and.0.op" in response.json()["error"]["fields"]
    for i in range(3):
        Contact.objects.create(brand=brand_a, email=f"{i}@x.test", attributes={"tier": "gold" if i else "silver"})
    rules = {"and": [{"field": "attributes.tier", "op": "equals", "value": "gold"}]}
    segment = key_client.post("/api/segments/", {"name": "Gold", "rules": rules}, format="json").json()
    assert key_client.get(f"/api/segments/{segment['id']}/estimate/").json() == {"count": 2}
    assert len(key_client.get(f"/api/segments/{segment['id']}/preview/").json()["results"]) == 2
    assert key_client.post("/api/segments/estimate/", {"rules": rules}, format="json").json() == {"count": 2}


def test_list_membership_and_other_brands_are_invisible(key_client, brand_a, brand_b):
    mine = Contact.objects.create(brand=brand_a, email="m@x.test")
    theirs = Contact.objects.create(brand=brand_b, email="t@x.test")
    contact_list = key_client.post("/api/lists/", {"name": "Newsletter"}).json()
    url = f"/api/lists/{contact_list['id']}/members/"
    assert key_client.post(url, {"contact_ids": [mine.pk]}, format="json").json() == {"added": 1}
    refused = key_client.post(url, {"contact_ids": [theirs.pk]}, format="json")
    assert refused.status_code == 400 and "contact_ids" in refused.json()["error"]["fields"]
    assert key_client.get(url).json()["count"] == 1
    assert key_client.get(f"/api/contacts/{theirs.pk}/").status_code == 404
    assert key_client.patch(f"/api/contacts/{theirs.pk}/", {"first_name": "x"}).status_code == 404
    other_segment = Segment.objects.create(brand=brand_b, name="Theirs")
    assert key_client.get(f"/api/segments/{other_segment.pk}/estimate/").status_code == 404
    assert [c["id"] for c in key_client.get("/api/contacts/").json()["results"]] == [mine.pk]
