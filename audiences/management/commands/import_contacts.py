"""``manage.py import_contacts FILE --brand SLUG [--list NAME] [--consent CHANNEL]``."""

import shutil
import time
from pathlib import Path

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError

from audiences.importer import run_contact_import
from audiences.models import Channel, ContactImport, ContactList
from marketing_hub.models import Brand


class Command(BaseCommand):
    help = "Import contacts from a CSV file (the same rules and summary as the admin upload)."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--brand", required=True, help="brand slug")
        parser.add_argument("--list", dest="list_name", help="add every imported contact to this list (created if new)")
        parser.add_argument("--consent", choices=[c for c in Channel.values], help="record consent on this channel")

    def handle(self, file, brand, list_name=None, consent=None, **options):
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            brand_obj = Brand.objects.get(slug=brand)
        except Brand.DoesNotExist:
            raise CommandError(f"no brand with slug {brand!r}") from None
        target = ContactList.objects.get_or_create(brand=brand_obj, name=list_name)[0] if list_name else None
        contact_import = ContactImport(
            brand=brand_obj, original_name=path.name, target_list=target, consent_channel=consent or ""
        )
        with path.open("rb") as fh:
            contact_import.file.save(path.name, File(fh), save=True)
        started = time.monotonic()
        last = [0.0]

        def progress(summary):
            now = time.monotonic()
            if now - last[0] >= 1 or summary.rows_done >= summary.total_rows:
                last[0] = now
                rate = summary.rows_done / max(now - started, 1e-6)
                self.stderr.write(f"{summary.rows_done:,} of {summary.total_rows:,} rows ({rate:,.0f} rows/s)")

        summary = run_contact_import(contact_import, progress=progress)
        contact_import.refresh_from_db()
        if summary is None:
            raise CommandError(f"{path.name} rejected: {contact_import.message}")
        self.stdout.write(f"{summary.line()} in {time.monotonic() - started:.1f} s")
        if contact_import.error_report:
            copy = path.with_name(path.stem + ".errors.csv")
            with contact_import.error_report.open("rb") as src, copy.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            self.stdout.write(f"rejected rows: {copy}")
