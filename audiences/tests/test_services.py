"""Audience services: finding contacts by address."""

from django.db import connection, transaction

from audiences.models import Contact
from audiences.services import contacts_by_address


def test_whatsapp_lookup_finds_numbers_copied_from_the_phone_and_their_own(brand_a, brand_b):
    same = Contact.objects.create(brand=brand_a, phone="+4915100000001", whatsapp="+4915100000001")
    own = Contact.objects.create(brand=brand_a, phone="+4915100000002", whatsapp="+4915100000001")
    no_phone = Contact.objects.create(brand=brand_a, whatsapp="+4915100000001")
    Contact.objects.create(brand=brand_b, phone="+4915100000001", whatsapp="+4915100000001")
    Contact.objects.create(brand=brand_a, phone="+4915100000003", whatsapp="+4915100000003")

    found = contacts_by_address(brand_a, "whatsapp", "+4915100000001")
    assert sorted(c.pk for c in found) == sorted([same.pk, own.pk, no_phone.pk])
    assert list(contacts_by_address(brand_a, "whatsapp", "+4915100000002")) == []  # own's phone, not its WhatsApp

    # the WhatsApp index holds only numbers other than the phone: the lookup must be able to use it
    # and the phone's index (an inbound message is one lookup among a million contacts)
    Contact.objects.bulk_create(
        Contact(brand=brand_a, phone=f"+4915200{i:06d}", whatsapp=f"+4915200{i:06d}") for i in range(3000)
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ANALYZE audiences_contact")
        sql, params = found.query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan" not in plan and "contact_brand_whatsapp" in plan and "contact_unique_phone" in plan, plan
