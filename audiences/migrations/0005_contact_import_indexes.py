"""Fewer per-row costs when a million contacts are inserted (see the comment on ``Contact.brand``).

The brand's own index goes (every other contact index starts with the brand), the brand stops being
a foreign-key constraint (PostgreSQL checked it with a trigger per row; Django's CASCADE and the
importer's lock per chunk keep contacts from outliving their brand), the Telegram index keeps only the
contacts that have a chat id, and the WhatsApp index only WhatsApp numbers other than the phone
(lookups by WhatsApp number find the rest through the phone's index: ``contacts_by_address``).

SQLite rebuilds the contact table for the foreign-key change, which its consent triggers (0004, on
audiences_consent, naming audiences_contact) do not survive: they are dropped first and created again.
"""

import importlib

import django.db.models.deletion
from django.db import migrations, models

_CONSENT_COLUMNS = importlib.import_module("audiences.migrations.0004_contact_consent_columns")


def _drop_sqlite_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in _CONSENT_COLUMNS.SQLITE_REVERSE:
            schema_editor.execute(statement)


def _create_sqlite_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in _CONSENT_COLUMNS._sqlite_sql():
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("audiences", "0004_contact_consent_columns"),
        ("marketing_hub", "0002_role_groups"),
    ]

    operations = [
        migrations.RunPython(_drop_sqlite_triggers, _create_sqlite_triggers, elidable=False),
        migrations.RemoveIndex(
            model_name="contact",
            name="contact_brand_whatsapp",
        ),
        migrations.RemoveIndex(
            model_name="contact",
            name="contact_brand_telegram",
        ),
        migrations.AlterField(
            model_name="contact",
            name="brand",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="contacts",
                to="marketing_hub.brand",
            ),
        ),
        migrations.AddIndex(
            model_name="contact",
            index=models.Index(
                condition=models.Q(
                    ("whatsapp__isnull", False),
                    models.Q(
                        ("phone__isnull", True),
                        models.Q(("whatsapp", models.F("phone")), _negated=True),
                        _connector="OR",
                    ),
                ),
                fields=["brand", "whatsapp"],
                name="contact_brand_whatsapp",
            ),
        ),
        migrations.AddIndex(
            model_name="contact",
            index=models.Index(
                condition=models.Q(("telegram_chat_id__isnull", False)),
                fields=["brand", "telegram_chat_id"],
                name="contact_brand_telegram",
            ),
        ),
        migrations.RunPython(_create_sqlite_triggers, _drop_sqlite_triggers, elidable=False),
    ]
