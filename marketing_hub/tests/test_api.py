"""API conventions: key authentication, brand scoping, error format, throttling, schema."""

import pytest
from rest_framework.test import APIClient

from marketing_hub.api.throttling import ClientRateThrottle
from marketing_hub.models import ApiKey
from marketing_hub.roles import Role
from marketing_hub.services import api_key_create
from marketing_hub.tests.factories import api_key, member


def test_request_without_credentials_is_refused_in_the_error_format(api_client, db):
    response = api_client.get("/api/brands/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_unknown_and_revoked_keys_are_refused(api_client, brand_a):
    key, plaintext = api_key_create(brand=brand_a, name="k", role=Role.VIEWER)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}x")
    assert api_client.get("/api/brands/").json()["error"]["code"] == "authentication_failed"
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert api_client.get("/api/brands/").status_code == 200
    assert ApiKey.objects.get(pk=key.pk).last_used_at is not None
    key.revoked_at = key.created_at
    key.save()
    assert api_client.get("/api/brands/").status_code == 401


def test_key_sees_only_its_brand(key_client, brand_a, brand_b):
    body = key_client.get("/api/brands/").json()
    assert body["count"] == 1
    assert [item["slug"] for item in body["results"]] == ["brand-a"]
    assert key_client.get(f"/api/brands/{brand_a.pk}/").status_code == 200
    response = key_client.get(f"/api/brands/{brand_b.pk}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_change_needs_the_role_and_the_brand(key_client, admin_key_client, brand_a, brand_b):
    assert key_client.patch(f"/api/brands/{brand_a.pk}/", {"sender_name": "X"}).status_code == 403
    assert admin_key_client.patch(f"/api/brands/{brand_b.pk}/", {"sender_name": "X"}).status_code == 404
    response = admin_key_client.patch(f"/api/brands/{brand_a.pk}/", {"sender_name": "New name"})
    assert response.status_code == 200
    assert response.json()["sender_name"] == "New name"
    brand_b.refresh_from_db()
    assert brand_b.sender_name == "Brand B"


def test_validation_errors_name_the_field(admin_key_client, brand_a):
    response = admin_key_client.patch(
        f"/api/brands/{brand_a.pk}/", {"time_zone": "Mars/Olympus", "primary_colour": "red"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert set(error["fields"]) == {"time_zone", "primary_colour"}
    assert "IANA" in error["fields"]["time_zone"][0]
    brand_a.refresh_from_db()
    assert brand_a.time_zone == "UTC"


def test_api_keys_endpoint_is_scoped_and_delete_revokes(admin_key_client, key_client, brand_a, brand_b):
    other, _ = api_key_create(brand=brand_b, name="b", role=Role.ADMIN)
    listing = admin_key_client.get("/api/api-keys/").json()
    assert {item["brand"] for item in listing["results"]} == {brand_a.pk}
    assert admin_key_client.get(f"/api/api-keys/{other.pk}/").status_code == 404
    assert admin_key_client.delete(f"/api/api-keys/{other.pk}/").status_code == 404
    assert ApiKey.objects.get(pk=other.pk).revoked_at is None
    # A Marketer key may not manage keys at all.
    assert key_client.get("/api/api-keys/").status_code == 403

    created = admin_key_client.post("/api/api-keys/", {"name": "new", "role": "viewer"})
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["brand"] == brand_a.pk and body["key"].startswith(f"mh_{body['prefix']}_")
    assert "key" not in admin_key_client.get(f"/api/api-keys/{body['id']}/").json()
    # A key cannot be created for another brand.
    response = admin_key_client.post("/api/api-keys/", {"name": "x", "role": "viewer", "brand": brand_b.pk})
    assert response.status_code == 400 and "brand" in response.json()["error"]["fields"]

    assert admin_key_client.delete(f"/api/api-keys/{body['id']}/").status_code == 204
    assert ApiKey.objects.get(pk=body["id"]).revoked_at is not None


def test_session_user_with_two_brands_must_name_the_brand(brand_a, brand_b):
    user = member(brand_a, Role.ADMIN, username="two")
    member(brand_b, Role.VIEWER, username="two")
    client = APIClient()
    client.force_login(user)
    assert client.get("/api/brands/").json()["count"] == 2
    response = client.post("/api/api-keys/", {"name": "x", "role": "viewer"})
    assert response.status_code == 400 and "brand" in response.json()["error"]["fields"]
    # Viewer of B may not create keys there.
    response = client.post("/api/api-keys/", {"name": "x", "role": "viewer", "brand": brand_b.pk})
    assert response.status_code == 400
    assert not ApiKey.objects.filter(brand=brand_b).exists()
    assert client.post("/api/api-keys/", {"name": "x", "role": "viewer", "brand": brand_a.pk}).status_code == 201


def test_throttling_answers_429_with_retry_after(monkeypatch, brand_a):
    monkeypatch.setattr(ClientRateThrottle, "THROTTLE_RATES", {"client": "3/minute"})
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key(brand_a)}")
    statuses = [client.get("/api/brands/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = client.get("/api/brands/")
    assert response.json()["error"]["code"] == "throttled"
    assert int(response["Retry-After"]) > 0


def test_pagination_and_filtering(brand_a, brand_b):
    from marketing_hub.tests.factories import UserFactory

    root = UserFactory(username="root", is_superuser=True)
    client = APIClient()
    client.force_login(root)
    page = client.get("/api/brands/?page_size=1&ordering=name").json()
    assert page["count"] == 2 and len(page["results"]) == 1 and page["next"]
    assert client.get("/api/brands/?slug=brand-b").json()["results"][0]["name"] == "Brand B"


@pytest.mark.django_db
def test_openapi_schema_and_offline_swagger_ui(client):
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    body = schema.json()
    assert body["openapi"].startswith("3.")
    assert "/api/brands/" in body["paths"] and "apiKey" in body["components"]["securitySchemes"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    # Swagger UI's assets come from the sidecar package under our own static URL, not a CDN.
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()
