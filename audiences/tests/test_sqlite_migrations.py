"""The embedded mode's database: every migration applies on SQLite (the suite itself runs on PostgreSQL)."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_migrations_apply_on_sqlite_and_keep_the_consent_triggers(tmp_path):
    # 0005 changes the contact's brand field, which SQLite does by rebuilding the table: the consent
    # triggers of 0004 (naming audiences_contact) must survive it
    database = tmp_path / "embedded.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "VAR_DIR": str(tmp_path / "var")}
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with sqlite3.connect(database) as db:
        triggers = sorted(name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        assert triggers == ["consent_to_contact_delete", "consent_to_contact_insert", "consent_to_contact_update"]
