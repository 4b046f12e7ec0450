"""Re-encrypt every stored channel secret with the first key of FIELD_ENCRYPTION_KEYS.

Key rotation: put the new key first in FIELD_ENCRYPTION_KEYS (keep the old one after it), deploy,
run this command, then remove the old key. All or nothing: if one row cannot be decrypted with
any configured key, nothing is rewritten and the row is named, so the old key is not dropped
while something still depends on it.
"""

from cryptography.fernet import InvalidToken
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from channels import crypto
from channels.models import ChannelAccount

FIELDS = ("credentials_encrypted", "webhook_secret_encrypted")


class Command(BaseCommand):
    help = "Re-encrypt channel account credentials and webhook secrets with the first FIELD_ENCRYPTION_KEYS key."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Check every row decrypts; write nothing.")
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, dry_run=False, batch_size=500, **options):
        rotated = 0
        with transaction.atomic():
            accounts = list(ChannelAccount.objects.select_for_update().only("pk", "brand_id", "name", *FIELDS))
            for account in accounts:
                for field in FIELDS:
                    token = getattr(account, field)
                    try:
                        setattr(account, field, crypto.rotate(token))
                    except InvalidToken:  # no configured key opens it
                        raise CommandError(
                            f"channel account {account.pk} ({account.name!r}, brand {account.brand_id}): {field} "
                            f"cannot be decrypted with any key in FIELD_ENCRYPTION_KEYS; "
                            "nothing was rewritten."
                        ) from None
                    rotated += bool(token)
            if not dry_run:
                # bulk_update leaves updated_at alone: re-encrypting is not an edit of the account.
                ChannelAccount.objects.bulk_update(accounts, FIELDS, batch_size=batch_size)
        verb = "would re-encrypt" if dry_run else "re-encrypted"
        self.stdout.write(f"{verb} {rotated} secret(s) in {len(accounts)} channel account(s).")
