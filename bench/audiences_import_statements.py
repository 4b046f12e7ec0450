"""Where an import's PostgreSQL time goes: wall and backend CPU seconds of each statement the importer runs.

    DATABASE_URL=postgres://marketing_hub:marketing_hub@127.0.0.1:5432/<a migrated database> \
        .venv/bin/python bench/audiences_import_statements.py var/bench/contacts_1000000.csv [--brand bench]

Imports the file into the brand (created with region DE when missing) through ``audiences.importer`` as
the bench does, timing every statement sent through Django's cursors and the COPY. Statements are grouped
by their first 70 characters (numbers folded); the backend's CPU comes from /proc (the server runs on this
machine; the clock ticks are 10 ms, so only the sums over many chunks mean something). Run it twice on
the same database for the re-import's statements.
"""

import argparse
import collections
import contextlib
import os
import re
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bigdb import process_cpu_seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("csv")
    parser.add_argument("--brand", default="bench")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketing_hub.settings")
    import django

    django.setup()
    import psycopg
    from django.db import connection
    from django.db.backends.utils import CursorWrapper

    from audiences.importer import import_csv
    from marketing_hub.models import Brand

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    def backend_cpu() -> float:
        return process_cpu_seconds(backend)

    totals = collections.defaultdict(lambda: [0, 0.0, 0.0])  # statement -> calls, wall, CPU

    @contextlib.contextmanager
    def timed(name: str):
        started, cpu = time.perf_counter(), backend_cpu()
        try:
            yield
        finally:
            total = totals[re.sub(r"\d+", "N", " ".join(name.split())[:70])]
            total[0] += 1
            total[1] += time.perf_counter() - started
            total[2] += backend_cpu() - cpu

    execute, copy = CursorWrapper.execute, psycopg.Cursor.copy

    def timed_execute(self, sql, params=None):
        with timed(str(sql)):
            return execute(self, sql, params)

    @contextlib.contextmanager
    def timed_copy(self, statement, *rest, **named):
        with timed("COPY"), copy(self, statement, *rest, **named) as stream:
            yield stream

    CursorWrapper.execute, psycopg.Cursor.copy = timed_execute, timed_copy

    brand, _ = Brand.objects.get_or_create(slug=args.brand, defaults={"name": args.brand, "default_region": "DE"})
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    started, cpu = time.perf_counter(), backend_cpu()
    with open(os.devnull, "w") as errors:
        summary = import_csv(brand, args.csv, errors=errors)
    after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    own, workers = ((b.ru_utime + b.ru_stime) - (a.ru_utime + a.ru_stime) for a, b in zip(usage, after, strict=True))
    print(
        f"{summary.line()}: {time.perf_counter() - started:.1f} s; CPU: backend {backend_cpu() - cpu:.1f} s, "
        f"importing process {own:.1f} s, its workers {workers:.1f} s; load {os.getloadavg()[0]:.2f}"
    )
    for name, (calls, wall, cpu) in sorted(totals.items(), key=lambda item: -item[1][1]):
        if wall >= 0.05:
            print(f"{calls:5d} {wall:7.2f} s wall {cpu:7.2f} s CPU  {name}")


if __name__ == "__main__":
    main()
