"""Background jobs of the audiences app (queue "default", see marketing_hub.celery)."""

from celery import shared_task


@shared_task(name="audiences.tasks.import_contacts")
def import_contacts(import_id: int) -> str:
    """Load an uploaded CSV (a ContactImport); a rejected file ends as status "failed" with a message."""
    from .importer import run_contact_import
    from .models import ContactImport

    contact_import = ContactImport.objects.select_related("brand", "target_list", "created_by").get(pk=import_id)
    if contact_import.status != ContactImport.Status.PENDING:
        return contact_import.status  # a redelivered message (acks_late) must not import twice at once
    summary = run_contact_import(contact_import)
    return summary.line() if summary else "failed"
