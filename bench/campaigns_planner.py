"""Benchmark: the planner materializes 1,000,000 recipients (campaigns.planner.plan_send).

    DATABASE_URL=postgres://marketing_hub:marketing_hub@127.0.0.1:5432/marketing_hub \
        .venv/bin/python bench/campaigns_planner.py [--rows 1000000] [--reuse] [--profile]

Uses the database ``mh_bench_plan`` (bench/bigdb.py: contacts with email, consents, 2,000 email
suppressions, every contact in the list "Everyone"; ``--reuse`` keeps it when it already holds
``--rows`` contacts). The message table is emptied (TRUNCATE + VACUUM ANALYZE) before each timed run.

1. bare baseline: one ``INSERT INTO campaigns_message (<the planner's 24 columns>) SELECT <constants>, id,
   email FROM audiences_contact WHERE brand_id = ...`` for every contact (no audience, consent,
   suppression, variant or time-zone logic), in one transaction;
2. ``plan_send`` of a campaign to the list, one email step, no frequency cap (what ``launch`` runs);
3. ``plan_send`` of a second campaign with a frequency cap of 1 while the first campaign's messages are
   in the table (every contact with a pending email counts as capped: the per-contact frequency
   subquery has rows to count).

Each figure is printed beside the baseline with the ratio and the load average. Goal: 1,000,000 in <= 15 s.

``--profile`` prints the planner's cProfile.
"""

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bigdb

BARE_SQL = """
INSERT INTO campaigns_message (brand_id, campaign_id, send_id, contact_id, variant_id, channel, step, account_id,
    template_id, marketing, priority, status, skip_reason, send_after, attempts, address, provider_message_id,
    error_code, error_message, segments, cost, context, created_at, updated_at)
SELECT brand_id, %(campaign)s, %(send)s, id, NULL, 'email', 0, %(account)s, %(template)s, true, 5, 'pending', '',
       now(), 0, coalesce(email, ''), '', '', '', 0, 0, '{}', now(), now()
FROM audiences_contact WHERE brand_id = %(brand)s
"""


def server_cpu() -> float:
    """CPU seconds used so far by this connection's PostgreSQL backend (the server must be local): an
    INSERT ... SELECT runs in that one process, so the difference is the work, whatever the load."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        stat = Path(f"/proc/{cursor.fetchone()[0]}/stat")
    if not stat.exists():
        return float("nan")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def empty_messages():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE campaigns_message")
        cursor.execute("VACUUM ANALYZE campaigns_message")


def ratios(seconds, cpu, bare, bare_cpu) -> str:
    if not bare:
        return ""
    return f"; ratio planner/bare: wall {seconds / bare:.2f}, server CPU {cpu / bare_cpu:.2f}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the planner run (top 25 by cumulative)")
    parser.add_argument("--skip-bare", action="store_true")
    args = parser.parse_args()
    bigdb.prepare(args.rows, reuse=args.reuse)
    bigdb.setup_django()
    from django.db import connection, transaction

    from audiences.models import ContactList
    from campaigns.models import Campaign, Send
    from campaigns.planner import plan_send
    from campaigns.tests.factories import account, campaign, template
    from marketing_hub.models import Brand

    brand = Brand.objects.get(slug="bench")
    everyone = ContactList.objects.get(brand=brand, name="Everyone")
    Campaign.objects.filter(brand=brand).delete()
    for model in ("channels.ChannelAccount", "campaigns.MessageTemplate"):
        from django.apps import apps

        apps.get_model(model).objects.filter(brand=brand).delete()
    email = account(brand, "email")
    offer = template(brand)
    first = campaign(brand, everyone, [(email, offer)], name="Spring sale")
    second = campaign(brand, everyone, [(email, offer)], name="Summer sale", frequency_cap=1)
    print(f"{args.rows:,} contacts in the list; one email step; {bigdb.load_line()}")

    bare = bare_cpu = None
    if not args.skip_bare:
        empty_messages()
        baseline_send = Send.objects.create(campaign=first, occurrence="bare", phase="all")
        cpu, started = server_cpu(), time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                BARE_SQL,
                {"campaign": first.pk, "send": baseline_send.pk, "account": email.pk, "template": offer.pk,
                 "brand": brand.pk},
            )  # fmt: skip
            inserted = cursor.rowcount
        bare = time.perf_counter() - started
        bare_cpu = server_cpu() - cpu
        print(
            f"bare INSERT ... SELECT:          {inserted:,} rows in {bare:6.1f} s, server CPU {bare_cpu:5.1f} s   "
            f"[{bigdb.load_line()}]"
        )

    empty_messages()
    send = Send.objects.create(campaign=first, occurrence="once", phase="all")
    profiler = cProfile.Profile() if args.profile else None
    cpu, started = server_cpu(), time.perf_counter()
    if profiler:
        profiler.enable()
    plan = plan_send(send)
    if profiler:
        profiler.disable()
    seconds, used = time.perf_counter() - started, server_cpu() - cpu
    print(
        f"plan_send, no frequency cap:    {plan.targeted:,} targeted ({plan.by_channel}, skipped {plan.skipped}) "
        f"in {seconds:6.1f} s, server CPU {used:5.1f} s{ratios(seconds, used, bare, bare_cpu)}; goal <= 15 s   "
        f"[{bigdb.load_line()}]"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE campaigns_message")
    send2 = Send.objects.create(campaign=second, occurrence="once", phase="all")
    cpu, started = server_cpu(), time.perf_counter()
    plan2 = plan_send(send2)
    seconds2, used2 = time.perf_counter() - started, server_cpu() - cpu
    print(
        f"plan_send, frequency cap 1:     {plan2.targeted:,} targeted ({plan2.by_channel}, skipped {plan2.skipped}) "
        f"in {seconds2:6.1f} s, server CPU {used2:5.1f} s{ratios(seconds2, used2, bare, bare_cpu)} (with the first "
        f"campaign's {plan.targeted:,} messages in the table)   [{bigdb.load_line()}]"
    )


if __name__ == "__main__":
    main()
