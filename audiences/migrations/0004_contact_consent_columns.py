"""Each contact carries its consent status per channel, copied by triggers from audiences_consent.

Whoever writes consent (services, the importer's set-based SQL, bulk_create, admin, raw SQL), the
triggers keep ``contact.consent_<channel>`` equal to the consent row's status ('' without one), so
segment counts and the planner test a column instead of joining a consent row per contact.
PostgreSQL: one statement-level trigger per event with transition tables (a 1M-row consent import
costs one UPDATE, not a million); SQLite: row-level triggers.
"""

from django.db import migrations, models

# ruff: noqa: S608 - the SQL is built from the constant CHANNELS below, never from input

# The channels as of this migration: a new channel needs a migration that adds its column and
# recreates the triggers.
CHANNELS = ["sms", "whatsapp", "email", "telegram", "webhook"]
CHOICES = [("subscribed", "Subscribed"), ("unsubscribed", "Unsubscribed"), ("pending", "Pending confirmation")]


def _pg_sql() -> str:
    blank = ", ".join(f"consent_{c} = CASE WHEN o.{c} THEN '' ELSE c.consent_{c} END" for c in CHANNELS)
    seen = ", ".join(f"bool_or(channel = '{c}') AS {c}" for c in CHANNELS)
    copy = ", ".join(f"consent_{c} = coalesce(n.{c}, c.consent_{c})" for c in CHANNELS)
    status = ", ".join(f"max(status) FILTER (WHERE channel = '{c}') AS {c}" for c in CHANNELS)
    return f"""
CREATE OR REPLACE FUNCTION audiences_consent_to_contact() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE audiences_contact c SET {blank}
        FROM (SELECT contact_id, {seen} FROM old_rows GROUP BY contact_id) o
        WHERE c.id = o.contact_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE audiences_contact c SET {copy}
        FROM (SELECT contact_id, {status} FROM new_rows GROUP BY contact_id) n
        WHERE c.id = n.contact_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER consent_to_contact_insert AFTER INSERT ON audiences_consent
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION audiences_consent_to_contact();
CREATE TRIGGER consent_to_contact_update AFTER UPDATE ON audiences_consent
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION audiences_consent_to_contact();
CREATE TRIGGER consent_to_contact_delete AFTER DELETE ON audiences_consent
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION audiences_consent_to_contact();
"""


PG_REVERSE = """
DROP TRIGGER IF EXISTS consent_to_contact_insert ON audiences_consent;
DROP TRIGGER IF EXISTS consent_to_contact_update ON audiences_consent;
DROP TRIGGER IF EXISTS consent_to_contact_delete ON audiences_consent;
DROP FUNCTION IF EXISTS audiences_consent_to_contact();
"""


def _sqlite_sql() -> list[str]:
    def assign(row: str, value: str) -> str:
        return ", ".join(
            f"consent_{c} = CASE {row}.channel WHEN '{c}' THEN {value} ELSE consent_{c} END" for c in CHANNELS
        )

    blank = f"UPDATE audiences_contact SET {assign('OLD', chr(39) * 2)} WHERE id = OLD.contact_id;"
    copy = f"UPDATE audiences_contact SET {assign('NEW', 'NEW.status')} WHERE id = NEW.contact_id;"
    return [
        f"CREATE TRIGGER consent_to_contact_insert AFTER INSERT ON audiences_consent BEGIN {copy} END",
        f"CREATE TRIGGER consent_to_contact_update AFTER UPDATE ON audiences_consent BEGIN {blank} {copy} END",
        f"CREATE TRIGGER consent_to_contact_delete AFTER DELETE ON audiences_consent BEGIN {blank} END",
    ]


SQLITE_REVERSE = [f"DROP TRIGGER IF EXISTS consent_to_contact_{event}" for event in ("insert", "update", "delete")]


def backfill(cursor) -> None:
    for channel in CHANNELS:
        cursor.execute(
            f"UPDATE audiences_contact SET consent_{channel} = (SELECT status FROM audiences_consent s "
            f"WHERE s.contact_id = audiences_contact.id AND s.channel = %s) "
            f"WHERE id IN (SELECT contact_id FROM audiences_consent WHERE channel = %s)",
            [channel, channel],
        )


def install(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_pg_sql())
        elif connection.vendor == "sqlite":
            for statement in _sqlite_sql():
                cursor.execute(statement)
        else:
            raise RuntimeError(f"no consent triggers for {connection.vendor}")
        backfill(cursor)


def uninstall(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(PG_REVERSE)
        else:
            for statement in SQLITE_REVERSE:
                cursor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("audiences", "0003_segment_default_everyone"),
    ]

    operations = [
        migrations.AddField(
            model_name="contact",
            name="consent_email",
            field=models.CharField(
                blank=True, choices=CHOICES, db_default="", default="", editable=False, max_length=16
            ),
        ),
        migrations.AddField(
            model_name="contact",
            name="consent_sms",
            field=models.CharField(
                blank=True, choices=CHOICES, db_default="", default="", editable=False, max_length=16
            ),
        ),
        migrations.AddField(
            model_name="contact",
            name="consent_telegram",
            field=models.CharField(
                blank=True, choices=CHOICES, db_default="", default="", editable=False, max_length=16
            ),
        ),
        migrations.AddField(
            model_name="contact",
            name="consent_webhook",
            field=models.CharField(
                blank=True, choices=CHOICES, db_default="", default="", editable=False, max_length=16
            ),
        ),
        migrations.AddField(
            model_name="contact",
            name="consent_whatsapp",
            field=models.CharField(
                blank=True, choices=CHOICES, db_default="", default="", editable=False, max_length=16
            ),
        ),
        migrations.RunPython(install, uninstall),
    ]
