"""Benchmark: a 1,000,000-row, 10-column contacts CSV into PostgreSQL, beside a default import-export resource.

    DATABASE_URL=postgres://marketing_hub:marketing_hub@127.0.0.1:5432/marketing_hub \
        .venv/bin/python bench/audiences_import.py [--rows 1000000] [--slice 20000]

Creates (drops first) the database ``mh_bench`` (``--database`` or BENCH_DATABASE to use another
name) on the server of DATABASE_URL, migrates it,
generates var/bench/contacts_<rows>.csv (once), then in child processes (the "worker"):
1. imports the file with ``audiences.importer`` (the fast path), printing wall time, rows/s and
   the child's peak RSS; 2. imports it again (everything unchanged: the matching/update path);
3. imports a slice of the same rows into a second brand with a DEFAULT django-import-export
   ``ModelResource`` for Contact (the bare baseline) and prints the ratio of rows/s.
``--no-reimport`` / ``--no-baseline`` skip steps 2 / 3 (for quick profiling runs). Redis is only
touched through the settings (REDIS_URL, CELERY_*), which the children inherit from the environment.
Each figure is printed with the 1-minute load average before and after it, the child's CPU
seconds (its own plus its validation workers') and its PostgreSQL backend's (from /proc).
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIRST = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Jörg", "Zoë"]
LAST = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann"]
TIERS = ["bronze", "silver", "gold", "platinum"]
CITIES = ["Berlin", "Hamburg", "München", "Köln", "Frankfurt", "Stuttgart", "Düsseldorf", "Leipzig"]
ZONES = ["Europe/Berlin", "Europe/Vienna", "Europe/Zurich", ""]
PREFIXES = ["151", "152", "157", "160", "162", "170", "171", "172", "175", "176", "177", "178", "179"]


def generate(path: Path, rows: int) -> None:
    """Realistic: German mobiles written locally (0151 ...) and internationally (+49 ...), some blanks."""
    rng = random.Random(42)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("customer id,email,mobile,first name,last name,language,country,timezone,city,tier\n")
        for i in range(rows):
            national = f"{rng.choice(PREFIXES)}{i:08d}"
            phone = f"0{national[:3]} {national[3:]}" if i % 2 else f"+49{national}"
            first, last = rng.choice(FIRST), rng.choice(LAST)
            fh.write(
                f"C{i:08d},{first.lower()}.{last.lower()}.{i}@example.com,{phone},{first},{last},de,DE,"
                f"{rng.choice(ZONES)},{rng.choice(CITIES)},{rng.choice(TIERS)}\n"
            )


def database_url(name: str) -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{name}"))


def setup_django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketing_hub.settings")
    import django

    django.setup()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def db_cpu_seconds() -> float:
    """CPU time of this process's PostgreSQL backend (the server runs on this machine)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_fast(path: str, slug: str) -> dict:
    setup_django()
    from audiences.importer import import_csv
    from marketing_hub.models import Brand

    brand, _ = Brand.objects.get_or_create(slug=slug, defaults={"name": slug, "default_region": "DE"})
    started, cpu, db_cpu = time.perf_counter(), cpu_seconds(), db_cpu_seconds()
    with open(os.devnull, "w") as errors:
        summary = import_csv(brand, path, errors=errors)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu": cpu_seconds() - cpu,
        "db_cpu": db_cpu_seconds() - db_cpu,
        "rows": summary.total_rows,
        "summary": summary.line(),
        "peak_rss_mb": peak_rss_mb(),
    }


def child_baseline(path: str, slug: str, rows: int) -> dict:
    setup_django()
    import tablib
    from import_export import resources

    from audiences.models import Contact
    from marketing_hub.models import Brand

    brand, _ = Brand.objects.get_or_create(slug=slug, defaults={"name": slug, "default_region": "DE"})

    class DefaultContactResource(resources.ModelResource):
        class Meta:
            model = Contact
            fields = ("id", "brand", "external_id", "email", "phone", "first_name", "last_name", "locale", "country",
                      "time_zone")  # fmt: skip

    with open(path, encoding="utf-8") as fh:
        lines = [next(fh) for _ in range(rows + 1)]
    header = ["external_id", "email", "phone", "first_name", "last_name", "locale", "country", "time_zone", "city",
              "tier"]  # fmt: skip
    dataset = tablib.Dataset(headers=[*header, "brand", "id"])
    for line in lines[1:]:
        dataset.append([*line.rstrip("\n").split(","), brand.pk, ""])
    started, cpu, db_cpu = time.perf_counter(), cpu_seconds(), db_cpu_seconds()
    result = DefaultContactResource().import_data(dataset, dry_run=False)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu": cpu_seconds() - cpu,
        "db_cpu": db_cpu_seconds() - db_cpu,
        "rows": rows,
        "errors": result.has_errors(),
        "peak_rss_mb": peak_rss_mb(),
    }


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def run_child(*args) -> dict:
    before = load()
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], cwd=ROOT, env=os.environ, capture_output=True, text=True
    )
    if out.returncode:
        sys.exit(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load"] = (
        f"load {before} -> {load()}, CPU {result['cpu']:.1f} s, PostgreSQL backend CPU {result['db_cpu']:.1f} s"
    )
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--slice", type=int, default=20_000)
    parser.add_argument("--database", default=os.environ.get("BENCH_DATABASE", "mh_bench"))
    parser.add_argument("--no-reimport", action="store_true")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_fast(*rest) if kind == "fast" else child_baseline(rest[0], rest[1], int(rest[2]))
        print(json.dumps(result))
        return

    import psycopg
    from psycopg import sql

    admin_url = os.environ["DATABASE_URL"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(args.database)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(args.database)))
    os.environ["DATABASE_URL"] = database_url(args.database)
    os.environ.setdefault("VAR_DIR", str(ROOT / "var" / "bench"))
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)

    path = ROOT / "var" / "bench" / f"contacts_{args.rows}.csv"
    if not path.exists():
        started = time.perf_counter()
        generate(path, args.rows)
        print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f} s")

    print(f"cores: {os.cpu_count()}")
    first = run_child("fast", str(path), "bench")
    print(
        f"fast import, new contacts:   {first['rows']:,} rows in {first['seconds']:.1f} s = "
        f"{first['rows'] / first['seconds']:,.0f} rows/s, worker peak RSS {first['peak_rss_mb']:.0f} MB "
        f"({first['summary']}; {first['load']})"
    )
    if not args.no_reimport:
        again = run_child("fast", str(path), "bench")
        print(
            f"fast re-import (unchanged):  {again['rows']:,} rows in {again['seconds']:.1f} s = "
            f"{again['rows'] / again['seconds']:,.0f} rows/s, worker peak RSS {again['peak_rss_mb']:.0f} MB "
            f"({again['summary']}; {again['load']})"
        )
    if args.no_baseline:
        return
    base = run_child("baseline", str(path), "bench-baseline", str(args.slice))
    base_rate = base["rows"] / base["seconds"]
    print(
        f"default import-export ModelResource: {base['rows']:,} rows in {base['seconds']:.1f} s = "
        f"{base_rate:,.0f} rows/s, peak RSS {base['peak_rss_mb']:.0f} MB (errors: {base['errors']}; {base['load']})"
    )
    print(f"ratio (fast new rows/s / default rows/s): {first['rows'] / first['seconds'] / base_rate:.0f}x")


if __name__ == "__main__":
    main()
