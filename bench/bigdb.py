"""Shared setup for the segment and planner benchmarks: a database of many contacts, made in SQL.

``prepare(rows)`` (re)creates the database ``mh_bench_plan`` on the server of DATABASE_URL, migrates
it and fills it with ``INSERT ... SELECT generate_series`` (seconds, not the import path, which has its
own benchmark). The data, deterministic (``setseed``):

- contacts of brand "bench": email (96%), phone, country (DE 40%, AT 20%, CH 15%, FR/NL/IT/PL/ES 5%
  each), time zone (3 zones + blank), attributes ``{"tier": bronze/silver/gold/platinum, "city": one of
  8, "orders": 0..49}``, 0.5% erased;
- consent on email for 75% of them (subscribed 80% of those, unsubscribed 15%, pending 5%) and
  on SMS for 40%;
- 2,000 email suppressions (hard bounces) of existing addresses;
- every contact in the list "Everyone" (the planner's audience).
"""

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_NAME = os.environ.get("BENCH_DATABASE", "mh_bench_plan")  # another name lets two runs share a server


def database_url(name: str = DB_NAME) -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{name}"))


def setup_django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketing_hub.settings")
    os.environ.setdefault("VAR_DIR", str(ROOT / "var" / "bench"))
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/10")
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/10")
    os.environ.setdefault("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/10")
    import django

    django.setup()


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process on this machine from /proc (None when it has ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends_cpu_by_pid(database: str, own: bool = True) -> dict[int, float]:
    """CPU seconds of each live PostgreSQL backend serving ``database`` (``own=False``: not this script's)."""
    from django.db import connection

    query = "SELECT pid FROM pg_stat_activity WHERE datname = %s" + ("" if own else " AND pid <> pg_backend_pid()")
    with connection.cursor() as cursor:
        cursor.execute(query, [database])
        pids = [row[0] for row in cursor.fetchall()]
    seconds = {pid: process_cpu_seconds(pid) for pid in pids}
    return {pid: cpu for pid, cpu in seconds.items() if cpu is not None}  # a backend may end meanwhile


def backends_cpu_seconds(database: str, own: bool = True) -> float:
    """utime + stime of the PostgreSQL backends serving ``database`` (``own=False``: not this script's)."""
    return sum(backends_cpu_by_pid(database, own).values())


def load_line() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


CONTACTS_SQL = """
INSERT INTO audiences_contact (brand_id, external_id, email, phone, whatsapp, telegram_chat_id, first_name,
    last_name, locale, country, time_zone, attributes, erased_at, created_at, updated_at)
SELECT %(brand)s, 'C' || lpad(i::text, 8, '0'),
       CASE WHEN r1 < 0.96 THEN 'c' || i || '@example.com' END,
       '+49151' || lpad(i::text, 8, '0'), NULL, NULL,
       (ARRAY['Anna','Ben','Clara','David','Emma','Felix','Greta','Hugo'])[1 + (i %% 8)],
       (ARRAY['Müller','Schmidt','Fischer','Weber','Meyer','Wagner'])[1 + (i %% 6)],
       'de',
       CASE WHEN r2 < 0.40 THEN 'DE' WHEN r2 < 0.60 THEN 'AT' WHEN r2 < 0.75 THEN 'CH' WHEN r2 < 0.80 THEN 'FR'
            WHEN r2 < 0.85 THEN 'NL' WHEN r2 < 0.90 THEN 'IT' WHEN r2 < 0.95 THEN 'PL' ELSE 'ES' END,
       (ARRAY['Europe/Berlin','Europe/Vienna','Europe/Zurich',''])[1 + floor(r3 * 4)::int],
       jsonb_build_object(
           'tier', (ARRAY['bronze','silver','gold','platinum'])[1 + floor(r4 * 4)::int],
           'city', (ARRAY['Berlin','Hamburg','München','Köln','Frankfurt','Stuttgart','Wien','Zürich'])
                   [1 + floor(r5 * 8)::int],
           'orders', floor(r6 * 50)::int),
       CASE WHEN r1 > 0.995 THEN now() END,
       now() - (i %% 1000) * interval '1 hour', now()
FROM (SELECT i, random() r1, random() r2, random() r3, random() r4, random() r5, random() r6
      FROM generate_series(1, %(rows)s) i) g
"""

CONSENT_SQL = """
INSERT INTO audiences_consent (contact_id, channel, status, source, updated_at)
SELECT id, 'email',
       CASE WHEN r < 0.75 * 0.80 THEN 'subscribed' WHEN r < 0.75 * 0.95 THEN 'unsubscribed' ELSE 'pending' END,
       'bench', now()
FROM (SELECT id, random() r FROM audiences_contact WHERE brand_id = %(brand)s) c WHERE r < 0.75
UNION ALL
SELECT id, 'sms', 'subscribed', 'bench', now()
FROM (SELECT id, random() r FROM audiences_contact WHERE brand_id = %(brand)s) c WHERE r < 0.40
"""


def prepare(rows: int, reuse: bool = False) -> None:
    """Create (drop first) and fill the bench database; point DATABASE_URL at it."""
    import psycopg

    admin_url = os.environ["DATABASE_URL"]
    os.environ["DATABASE_URL"] = database_url()
    if reuse:
        with psycopg.connect(database_url()) as conn:
            count = conn.execute("SELECT count(*) FROM audiences_contact").fetchone()[0]
        if count == rows:
            print(f"reusing {DB_NAME} ({rows:,} contacts)")
            return
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True, env=os.environ)
    setup_django()
    from django.db import connection

    from marketing_hub.models import Brand

    started = time.perf_counter()
    brand = Brand.objects.create(
        name="bench", slug="bench", default_region="DE", time_zone="Europe/Berlin",
        quiet_hours_start=dt.time(21), quiet_hours_end=dt.time(8),
    ).pk  # fmt: skip
    with connection.cursor() as conn:
        conn.execute("SELECT setseed(0.42)")
        conn.execute(CONTACTS_SQL, {"brand": brand, "rows": rows})
        conn.execute(CONSENT_SQL, {"brand": brand})
        conn.execute(
            "INSERT INTO audiences_suppression (brand_id, channel, address, reason, source, created_at) "
            "SELECT %(brand)s, 'email', email, 'hard_bounce', 'bench', now() FROM audiences_contact "
            "WHERE brand_id = %(brand)s AND email IS NOT NULL ORDER BY random() LIMIT 2000",
            {"brand": brand},
        )
        conn.execute(
            "INSERT INTO audiences_contactlist (brand_id, name, description, created_at) "
            "VALUES (%s, 'Everyone', '', now()) RETURNING id",
            (brand,),
        )
        list_id = conn.fetchone()[0]
        conn.execute(
            "INSERT INTO audiences_listmembership (contact_list_id, contact_id, added_at) "
            "SELECT %s, id, now() FROM audiences_contact WHERE brand_id = %s",
            (list_id, brand),
        )
    loaded = time.perf_counter() - started
    with psycopg.connect(database_url(), autocommit=True) as conn:
        # Writing the consents rewrote every contact that got one (the trigger copies the status onto
        # the contact, audiences 0004): compact the heap as routine maintenance would, so the figures do
        # not depend on where the bench's one-off bulk load left dead row versions.
        conn.execute("VACUUM FULL audiences_contact")
        conn.execute("VACUUM ANALYZE")
    print(
        f"generated {rows:,} contacts (+ consents, suppressions, list) in {loaded:.1f} s, "
        f"VACUUM ANALYZE done at {time.perf_counter() - started:.1f} s"
    )
