"""Receivers of the audiences app."""

from django.db.models.signals import pre_delete

from audiences.models import Contact
from marketing_hub.models import Brand


def test_contacts_written_while_their_brand_is_deleted_go_with_it(brand_a):
    # Contact.brand is not a database constraint: a contact committed after Django collected the
    # brand's contacts (an import's chunk) must not outlive the brand
    brand_id = brand_a.pk
    Contact.objects.create(brand=brand_a, email="collected@example.com")

    def write_late(sender, instance, **kwargs):  # runs after the collector has gathered the contacts
        Contact.objects.create(brand_id=instance.pk, email="late@example.com")

    pre_delete.connect(write_late, sender=Brand, dispatch_uid="test-write-late")
    try:
        brand_a.delete()
    finally:
        pre_delete.disconnect(sender=Brand, dispatch_uid="test-write-late")
    assert list(Contact.objects.filter(brand_id=brand_id)) == []
