"""A user of brand A can neither see nor touch, nor guess by id, anything of brand B."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from marketing_hub.models import ApiKey, Brand
from marketing_hub.roles import Role
from marketing_hub.services import api_key_create
from marketing_hub.tests.factories import UserFactory, member


@pytest.fixture
def keys(brand_a, brand_b):
    return api_key_create(brand=brand_a, name="key A", role=Role.MARKETER)[0], api_key_create(
        brand=brand_b, name="key B", role=Role.MARKETER
    )[0]


def login(client, user):
    client.force_login(user)
    return client


def test_brand_list_shows_only_own_brands(client, brand_a, brand_b, marketer_a):
    response = login(client, marketer_a).get(reverse("admin:marketing_hub_brand_changelist"))
    assert response.status_code == 200
    names = [brand.name for brand in response.context["cl"].result_list]
    assert names == ["Brand A"]


@pytest.mark.parametrize("view", ["change", "delete", "history"])
def test_other_brand_by_id_is_404(client, brand_a, brand_b, marketer_a, view):
    login(client, marketer_a)
    other = client.get(reverse(f"admin:marketing_hub_brand_{view}", args=[brand_b.pk])).status_code
    missing = client.get(reverse(f"admin:marketing_hub_brand_{view}", args=[999_999])).status_code
    # Another brand's object answers exactly as a missing one: 404, or 403 where the role may
    # not delete brands at all.
    assert other == missing == (403 if view == "delete" else 404)
    # The own brand is visible (a Marketer reads the brand but may not delete it).
    own = client.get(reverse(f"admin:marketing_hub_brand_{view}", args=[brand_a.pk])).status_code
    assert own == (403 if view == "delete" else 200)


def test_marketer_cannot_change_brand_but_admin_can(client, brand_a):
    marketer = member(brand_a, Role.MARKETER, username="m")
    url = reverse("admin:marketing_hub_brand_change", args=[brand_a.pk])
    data = {
        "name": "Renamed",
        "slug": "brand-a",
        "default_locale": "en",
        "default_region": "US",
        "time_zone": "UTC",
        "primary_colour": "#000000",
        "secondary_colour": "#FFFFFF",
        "sms_opt_out_suffix": "STOP",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    response = login(client, marketer).post(url, data)
    assert response.status_code == 403
    assert Brand.objects.get(pk=brand_a.pk).name == "Brand A"

    admin = member(brand_a, Role.ADMIN, username="a")
    memberships = brand_a.memberships.count()
    data["memberships-INITIAL_FORMS"] = "0"
    response = login(client, admin).post(url, data)
    assert response.status_code == 302, response.content
    assert Brand.objects.get(pk=brand_a.pk).name == "Renamed"
    assert brand_a.memberships.count() == memberships


def test_api_key_admin_is_scoped_and_admin_only(client, brand_a, brand_b, keys):
    _key_a, key_b = keys
    marketer = member(brand_a, Role.MARKETER, username="m")
    assert login(client, marketer).get(reverse("admin:marketing_hub_apikey_changelist")).status_code == 403

    admin = member(brand_a, Role.ADMIN, username="a")
    login(client, admin)
    response = client.get(reverse("admin:marketing_hub_apikey_changelist"))
    assert [key.name for key in response.context["cl"].result_list] == ["key A"]
    assert client.get(reverse("admin:marketing_hub_apikey_change", args=[key_b.pk])).status_code == 404
    assert client.get(reverse("admin:marketing_hub_apikey_delete", args=[key_b.pk])).status_code == 404


def test_action_with_forged_ids_of_other_brand_touches_nothing(client, brand_a, brand_b, keys):
    key_a, key_b = keys
    admin = member(brand_a, Role.ADMIN, username="a")
    response = login(client, admin).post(
        reverse("admin:marketing_hub_apikey_changelist"),
        {"action": "revoke", "_selected_action": [key_a.pk, key_b.pk]},
    )
    assert response.status_code == 302
    assert ApiKey.objects.get(pk=key_a.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=key_b.pk).revoked_at is None


def test_delete_selected_of_other_brand_deletes_nothing(client, brand_a, brand_b, keys):
    _key_a, key_b = keys
    admin = member(brand_a, Role.ADMIN, username="a")
    login(client, admin).post(
        reverse("admin:marketing_hub_apikey_changelist"),
        {"action": "delete_selected", "_selected_action": [key_b.pk], "post": "yes"},
    )
    assert ApiKey.objects.filter(pk=key_b.pk).exists()


def test_add_form_offers_only_own_brands(client, brand_a, brand_b):
    admin = member(brand_a, Role.ADMIN, username="a")
    response = login(client, admin).get(reverse("admin:marketing_hub_apikey_add"))
    choices = list(response.context["adminform"].form.fields["brand"].queryset)
    assert choices == [brand_a]
    # Posting the other brand's id is refused as an invalid choice, and nothing is created.
    response = client.post(
        reverse("admin:marketing_hub_apikey_add"), {"brand": brand_b.pk, "name": "x", "role": "viewer"}
    )
    assert response.status_code == 200
    assert "brand" in response.context["adminform"].form.errors
    assert not ApiKey.objects.filter(brand=brand_b).exists()


def test_adding_a_key_shows_its_secret_once_and_stores_only_a_hash(client, brand_a):
    admin = member(brand_a, Role.ADMIN, username="a")
    response = login(client, admin).post(
        reverse("admin:marketing_hub_apikey_add"),
        {"brand": brand_a.pk, "name": "CRM sync", "role": "marketer"},
        follow=True,
    )
    key = ApiKey.objects.get(name="CRM sync")
    shown = [str(m) for m in response.context["messages"] if "copy it now" in str(m)]
    assert len(shown) == 1 and f"mh_{key.prefix}_" in shown[0]
    secret = shown[0].split(": ", 1)[1].split(" ")[0]
    assert secret not in key.key_hash and len(key.key_hash) == 64


def test_superuser_sees_every_brand(client, brand_a, brand_b):
    root = UserFactory(username="root", is_superuser=True)
    response = login(client, root).get(reverse("admin:marketing_hub_brand_changelist"))
    assert {b.name for b in response.context["cl"].result_list} == {"Brand A", "Brand B"}


def test_user_without_membership_sees_nothing(client, brand_a):
    stranger = UserFactory(username="stranger")
    login(client, stranger)
    assert client.get(reverse("admin:marketing_hub_brand_changelist")).status_code == 403
    assert client.get(reverse("admin:marketing_hub_brand_change", args=[brand_a.pk])).status_code in (403, 404)


def test_role_groups_follow_memberships(brand_a, brand_b):
    user = member(brand_a, Role.MARKETER, username="multi")
    member(brand_b, Role.VIEWER, username="multi")
    assert set(user.groups.values_list("name", flat=True)) == {"Marketer", "Viewer"}
    user.memberships.get(brand=brand_a).delete()
    assert set(user.groups.values_list("name", flat=True)) == {"Viewer"}


def test_role_groups_hold_the_expected_permissions(db):
    viewer = set(Group.objects.get(name="Viewer").permissions.values_list("codename", flat=True))
    assert viewer and all(code.startswith("view_") for code in viewer)
    assert "view_apikey" not in viewer
    analyst = set(Group.objects.get(name="Analyst").permissions.values_list("codename", flat=True))
    assert "export_data" in analyst and not any(code.startswith("change_") for code in analyst)
    admin = set(Group.objects.get(name="Admin").permissions.values_list("codename", flat=True))
    assert {"change_apikey", "change_brand", "change_membership"} <= admin
    assert "delete_brand" not in admin and "add_brand" not in admin
