"""Benchmark: estimate (COUNT) and preview (first 50) of a three-condition segment over 1,000,000 contacts.

    DATABASE_URL=postgres://marketing_hub:marketing_hub@127.0.0.1:5432/marketing_hub \
        .venv/bin/python bench/segments.py [--rows 1000000] [--runs 7] [--reuse]

Creates (drops first) the database ``mh_bench_plan`` (see bench/bigdb.py for the data; ``--reuse`` keeps
it when it already holds ``--rows`` contacts), then times, through the product code
(``audiences.services.segment_members``, as the API's ``estimate/`` and ``preview/`` use it):

- ``segment_members(segment).count()`` for tier = gold AND country = DE AND consent on email = subscribed;
- ``segment_members(segment).order_by("pk")[:50]`` (the API preview) and the admin's ``[:50]`` (-id);

beside a hand-written SQL COUNT of the same set (a plain join, no ORM): best and median of ``--runs``
runs after one warm-up, with the load average. Goals: count <= 200 ms, preview <= 100 ms.
Last, the server CPU time of each count run serially (parallel workers off, read from
/proc/<backend pid>/stat): the work itself, which the load of a shared machine does not inflate.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bigdb

RULES = {
    "and": [
        {"field": "attributes.tier", "op": "equals", "value": "gold"},
        {"field": "country", "op": "equals", "value": "DE"},
        {"field": "consent.email", "op": "equals", "value": "subscribed"},
    ]
}
HAND_SQL = """
SELECT count(*) FROM audiences_contact c
JOIN audiences_consent k ON k.contact_id = c.id AND k.channel = 'email' AND k.status = 'subscribed'
WHERE c.brand_id = %s AND c.erased_at IS NULL AND c.country = 'DE' AND c.attributes ->> 'tier' = 'gold'
"""


def timed(function, runs: int):
    function()  # warm-up (plans, caches)
    seconds, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return result, min(seconds) * 1000, statistics.median(seconds) * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the product count")
    args = parser.parse_args()
    bigdb.prepare(args.rows, reuse=args.reuse)
    bigdb.setup_django()
    from django.db import connection

    from audiences.models import Segment
    from audiences.services import segment_members
    from marketing_hub.models import Brand

    brand = Brand.objects.get(slug="bench")
    segment, _ = Segment.objects.update_or_create(brand=brand, name="Gold in DE, email OK", defaults={"rules": RULES})

    def count():
        return segment_members(segment).count()

    def preview_api():
        return [c.pk for c in segment_members(segment).order_by("pk")[:50]]

    def preview_admin():
        return [c.pk for c in segment_members(segment)[:50]]

    def hand():
        with connection.cursor() as cursor:
            cursor.execute(HAND_SQL, [brand.pk])
            return cursor.fetchone()[0]

    if args.explain:
        with connection.cursor() as cursor:
            sql, params = segment_members(segment).order_by().values("pk").query.sql_with_params()
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) FROM ({sql}) s", params)
            print("\n".join(row[0] for row in cursor.fetchall()))

    print(f"{args.rows:,} contacts; segment: tier = gold AND country = DE AND consent.email = subscribed")
    n, best, median = timed(count, args.runs)
    n_hand, hand_best, hand_median = timed(hand, args.runs)
    assert n == n_hand, (n, n_hand)
    print(f"estimate (count = {n:,}):      best {best:7.1f} ms, median {median:7.1f} ms   [{bigdb.load_line()}]")
    print(
        f"hand-written SQL count:        best {hand_best:7.1f} ms, median {hand_median:7.1f} ms   "
        f"ratio product/hand (best) {best / hand_best:.2f}; goal <= 200 ms"
    )
    rows, best, median = timed(preview_api, args.runs)
    assert len(rows) == min(50, n)
    print(f"preview, API (order by pk):    best {best:7.1f} ms, median {median:7.1f} ms   goal <= 100 ms")
    rows, best, median = timed(preview_admin, args.runs)
    print(
        f"preview, admin (order by -id): best {best:7.1f} ms, median {median:7.1f} ms   goal <= 100 ms   "
        f"[{bigdb.load_line()}]"
    )
    serial_cpu(connection, count, hand, args.runs)


def serial_cpu(connection, count, hand, runs: int):
    """CPU time of the server process for each count run serially (no parallel workers): the work
    itself, which the load of a shared machine does not inflate (the server must be local)."""
    import os

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        stat = Path(f"/proc/{cursor.fetchone()[0]}/stat")
        if not stat.exists():
            return
        cursor.execute("SET max_parallel_workers_per_gather = 0")

    def cpu_ms() -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")

    for label, function in (("estimate (product)", count), ("hand-written SQL", hand)):
        function()
        used = []
        for _ in range(runs):
            before = cpu_ms()
            function()
            used.append(cpu_ms() - before)
        print(
            f"serial server CPU, {label + ':':19s} median {statistics.median(used):5.0f} ms "
            f"(min {min(used):.0f}; 10 ms ticks)"
        )
    with connection.cursor() as cursor:
        cursor.execute("RESET max_parallel_workers_per_gather")


if __name__ == "__main__":
    main()
