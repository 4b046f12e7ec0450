"""Signal receivers of the audiences app (connected in ``AudiencesConfig.ready``)."""

from django.db.models.signals import post_delete
from django.dispatch import receiver

from marketing_hub.models import Brand

from .models import Contact


@receiver(post_delete, sender=Brand, dispatch_uid="audiences.brand_deleted")
def delete_contacts_of_deleted_brand(sender, instance, **kwargs):
    """Contacts an import committed while the brand was being deleted go with it.

    ``Contact.brand`` is not a database constraint (see the model). Django's CASCADE collects the
    brand's contacts before deleting the brand row, and deleting that row waits for an importing
    chunk's transaction (which locks the brand): this statement runs after it, and sees its rows.
    """
    Contact.objects.filter(brand_id=instance.pk).delete()
