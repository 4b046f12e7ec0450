"""The contact's consent columns (``consent_<channel>``) always equal its consent rows, whoever writes them.

Segments and the planner read those columns instead of joining audiences_consent; database triggers
(migration audiences 0004) keep them. A column that drifted would send to, or skip, the wrong people.
"""

import pytest
from django.db import connection
from django.utils import timezone

from audiences.models import CONSENT_COLUMNS, Channel, Consent, Contact
from audiences.services import consent_bulk_subscribe, consent_set


def _columns(contact: Contact) -> dict[str, str]:
    row = Contact.objects.values(*sorted(CONSENT_COLUMNS)).get(pk=contact.pk)
    return {name.removeprefix("consent_"): value for name, value in row.items() if value}


def _rows(contact: Contact) -> dict[str, str]:
    return dict(Consent.objects.filter(contact=contact).values_list("channel", "status"))


@pytest.mark.django_db
def test_columns_follow_every_kind_of_consent_write(brand_a):
    now = timezone.now()
    ann, bob, cy = (Contact.objects.create(brand=brand_a, email=f"{name}@example.com") for name in ("ann", "bob", "cy"))
    stale_ann = Contact.objects.get(pk=ann.pk)

    consent_set(ann, "email", "pending", source="form")  # services: update_or_create
    consent_set(ann, "email", "subscribed", source="form")
    consent_bulk_subscribe([bob.pk, cy.pk], "sms", source="import:x.csv")  # set-based upsert
    Consent.objects.bulk_create(  # two channels of one contact in one statement
        [
            Consent(contact=bob, channel=channel, status=status, source="api", updated_at=now)
            for channel, status in (("whatsapp", "pending"), ("telegram", "subscribed"))
        ]
    )
    assert _columns(ann) == _rows(ann) == {"email": "subscribed"}
    assert _columns(bob) == _rows(bob) == {"sms": "subscribed", "whatsapp": "pending", "telegram": "subscribed"}

    Consent.objects.filter(contact=bob, channel="sms").update(status="unsubscribed")  # queryset update
    Consent.objects.filter(contact=bob, channel="telegram").delete()  # blocked bot
    with connection.cursor() as cursor:  # raw SQL, as the importer writes
        cursor.execute(
            "INSERT INTO audiences_consent (contact_id, channel, status, source, updated_at) VALUES (%s, %s, %s, %s, %s)",
            [cy.pk, "email", "pending", "raw", now],
        )
    for person in (ann, bob, cy):
        assert _columns(person) == _rows(person), person
    assert _columns(bob) == {"sms": "unsubscribed", "whatsapp": "pending"}

    # An instance loaded before the change never writes its stale copy back.
    stale_ann.first_name = "Ann"
    stale_ann.save()
    assert _columns(ann) == {"email": "subscribed"}
    assert Contact.objects.get(pk=ann.pk).first_name == "Ann"
    assert {c.value for c in Channel} == {name.removeprefix("consent_") for name in CONSENT_COLUMNS}
