"""The embedded mode's database: every migration applies on SQLite (the suite itself runs on PostgreSQL),
and a marketer's first step there, importing a CSV, works end to end."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CSV = (
    "E-Mail;Mobile;First name;Tier\n"
    "anna@example.com;0151 23456789;Anna;gold\n"
    "BEN@Example.com;+49 151 98765432;Ben;silver\n"
    "not-an-email;0151 11111111;Carl;gold\n"
)


def test_migrations_apply_on_sqlite_and_an_import_runs_there(tmp_path):
    # 0005 changes the contact's brand field, which SQLite does by rebuilding the table: the consent
    # triggers of 0004 (naming audiences_contact) must survive it
    database = tmp_path / "embedded.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "VAR_DIR": str(tmp_path / "var")}

    def manage(*args):
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)

    done = manage("migrate", "-v", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    with sqlite3.connect(database) as db:
        triggers = sorted(name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        assert triggers == ["consent_to_contact_delete", "consent_to_contact_insert", "consent_to_contact_update"]

    # The importer's SQLite path (the PostgreSQL one uses COPY): the same rules, summary and consent.
    made = manage(
        "shell",
        "-c",
        "from marketing_hub.models import Brand; Brand.objects.create(name='S', slug='s', default_region='DE')",
    )
    assert made.returncode == 0, made.stderr[-2000:]
    source = tmp_path / "contacts.csv"
    source.write_text(CSV, encoding="utf-8")
    first = manage("import_contacts", str(source), "--brand", "s", "--list", "Newsletter", "--consent", "email")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "2 created" in first.stdout and "1 rejected" in first.stdout, first.stdout
    again = manage("import_contacts", str(source), "--brand", "s", "--consent", "email")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 created" in again.stdout and "2 unchanged" in again.stdout, again.stdout
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT email, phone, consent_email, json_extract(attributes, '$.tier') FROM audiences_contact ORDER BY email"
        ).fetchall()
        members = db.execute("SELECT count(*) FROM audiences_listmembership").fetchone()[0]
    assert rows == [
        ("anna@example.com", "+4915123456789", "subscribed", "gold"),
        ("ben@example.com", "+4915198765432", "subscribed", "silver"),
    ]
    assert members == 2
