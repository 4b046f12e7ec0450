"""A GIN index on Contact.attributes where the database has one (PostgreSQL).

Segment equality conditions on attributes compile to JSON containment, which this index serves.
The models and ORM code stay portable: on SQLite this migration does nothing.
"""

from django.db import migrations

INDEX = "audiences_contact_attributes_gin"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON audiences_contact USING gin (attributes)")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("audiences", "0001_initial")]
    operations = [migrations.RunPython(create, drop, elidable=False)]
