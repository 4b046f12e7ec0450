"""Campaign send throughput, launch to all sent, through real Celery workers, beat and the sandbox.

    DATABASE_URL=postgres://marketing_hub:marketing_hub@127.0.0.1:5432/marketing_hub \
        .venv/bin/python bench/campaigns_send.py [--emails 100000] [--sms 100000] [--limited 6000]

Creates (drops first) the database ``mh_bench_send`` (``--db-name``) on the server of DATABASE_URL and
migrates it; Redis dbs 5 (cache, rate limits), 6 (broker) and 7 (results) (``--redis-dbs 5,6,7``, server
``--redis``) are flushed and used. The provider sandbox runs in its own process on a free port
(``--sandbox-port`` to choose one; no callbacks, bodies not recorded); ``--workers`` Celery workers
(prefork, ``--concurrency`` processes each) and beat run as real subprocesses, as in production.

1. EMAIL: a campaign to ``--emails`` contacts through a SendGrid account (rate 1,000,000/s, no
   quota), timed from ``services.launch`` (planning included) until no message is pending, queued
   or sending. Beside it, the SendGrid SDK against the same sandbox, two ways: a sequential loop of
   ``client.send(Mail(...))``, one message a request (``--bare-email-each`` messages; the SMS phase's
   loop, for email: the ratio goal's baseline), and a batch loop that posts the same number of
   personalized emails 1,000 a request (payloads built inside the clock; no rendering, no tracking:
   the fastest the SDK can be driven). Goal >= 5,000/s.
2. SMS: the same with ``--sms`` contacts through a Twilio account, beside a bare sequential
   ``client.messages.create`` loop (``--bare-sms`` messages). Goal >= 1,000/s.
3. LIMITED: ``--limited`` SMS through a Twilio account limited to ``--limited-rate``/s: the achieved
   rate, and the CPU seconds the worker and beat processes (all their children) used per wall
   second. Goal: the limit kept saturated with under 10 % of a core.

Every phase checks that the sandbox received each message exactly once.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bigdb import backends_cpu_by_pid, backends_cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DB_NAME = "mh_bench_send"  # --db-name / BENCH_DB_NAME
REDIS = "redis://127.0.0.1:6379"  # --redis / BENCH_REDIS
REDIS_DBS = (5, 6, 7)  # cache and rate limits, broker, results: --redis-dbs / BENCH_REDIS_DBS
OPEN = ("pending", "queued", "sending")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def database_url(name: str) -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{name}"))


def load() -> str:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return f"load {one} {five} {fifteen}"


def postgres_cpu_seconds() -> float:
    """utime + stime of the PostgreSQL backends serving the bench database (its share of the server)."""
    return backends_cpu_seconds(DB_NAME)


class BackendsCpu:
    """The bench database's backends' CPU over a phase, sampled while it runs: the workers close a
    connection older than CONN_MAX_AGE (60 s) after a task, and a backend that ended before the
    phase's last reading took its CPU with it (the dispatcher's, doing the claims, among them)."""

    def __init__(self):
        self.first = self._by_pid()
        self.last = dict(self.first)

    @staticmethod
    def _by_pid() -> dict[int, float]:
        return backends_cpu_by_pid(DB_NAME)

    def sample(self) -> None:
        self.last.update(self._by_pid())

    def seconds(self) -> float:
        self.sample()
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())


def group_cpu_seconds(pgids: list[int]) -> float:
    """utime + stime of every live process in these process groups (a worker and its pool children)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) in pgids:  # field 5 of stat: pgrp
            total += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return total / CLOCK_TICKS


def prepare_environment(args) -> None:
    import psycopg
    import redis

    global DB_NAME, REDIS, REDIS_DBS
    # campaigns_chaos.py shares this set-up without these flags: the defaults then.
    DB_NAME, REDIS = getattr(args, "db_name", DB_NAME), getattr(args, "redis", REDIS).rstrip("/")
    REDIS_DBS = tuple(int(n) for n in str(getattr(args, "redis_dbs", "5,6,7")).split(","))
    if len(REDIS_DBS) != 3 or not DB_NAME.isidentifier():
        raise SystemExit("--redis-dbs takes three numbers (cache, broker, results); --db-name a plain identifier")
    admin_url = os.environ["DATABASE_URL"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    os.environ.update({
        "DATABASE_URL": database_url(DB_NAME), "REDIS_URL": f"{REDIS}/{REDIS_DBS[0]}",
        "CELERY_BROKER_URL": f"{REDIS}/{REDIS_DBS[1]}", "CELERY_RESULT_BACKEND": f"{REDIS}/{REDIS_DBS[2]}", "VAR_DIR": str(ROOT / "var" / "bench-send"), "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "marketing_hub.settings", "CONN_MAX_AGE": "60",
        "PUBLIC_BASE_URL": args.public_url,
    })  # fmt: skip
    Path(os.environ["VAR_DIR"]).mkdir(parents=True, exist_ok=True)
    for db in REDIS_DBS:
        redis.Redis.from_url(f"{REDIS}/{db}").flushdb()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)
    subprocess.run([sys.executable, "manage.py", "install_schedules"], cwd=ROOT, check=True, capture_output=True)


def sandbox_call(url: str, path: str, data: dict | None = None) -> dict:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url + path, data=body, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class Hub:
    """Beat and workers as subprocesses, restartable; logs in VAR_DIR."""

    def __init__(self, workers: int, concurrency: int):
        from marketing_hub import processes

        self.processes = processes
        self.var = Path(os.environ["VAR_DIR"])
        self.var.mkdir(parents=True, exist_ok=True)
        env = processes.environment()
        self.log = open(self.var / "hub.log", "a")
        self.beat = processes.start_beat(env, self.var / "beat", log=self.log)
        self.workers = [
            processes.start_worker(env, f"bench{i}", pool="prefork", concurrency=concurrency, log=self.log)
            for i in range(workers)
        ]

    def pgids(self) -> list[int]:
        return [p.pid for p in [self.beat, *self.workers]]

    def stop(self) -> None:
        for process in [*self.workers, self.beat]:
            self.processes.kill(process)
        self.log.close()


def run_campaign(hub: Hub, brand, contact_list, acc, tpl, sandbox_url: str, expected: int, timeout: float) -> dict:
    from campaigns import services
    from campaigns.models import Message
    from campaigns.tests.factories import campaign

    sandbox_call(sandbox_url, "/_sandbox/reset", {})
    created = campaign(brand, contact_list, [(acc, tpl)], name=f"bench {acc.channel} {time.time()}")
    cpu_before, pg_before, backends = group_cpu_seconds(hub.pgids()), postgres_cpu_seconds(), BackendsCpu()
    beat_before = group_cpu_seconds([hub.beat.pid])
    started = time.perf_counter()
    services.launch(created, "bench")
    planned = time.perf_counter() - started
    open_left, first_sent_at, samples = expected, None, []
    while time.perf_counter() - started < timeout:
        time.sleep(0.2)
        open_left = Message.objects.filter(campaign=created, status__in=OPEN).count()
        samples.append((time.perf_counter() - started, expected - open_left))
        if len(samples) % 5 == 0:
            backends.sample()
        if first_sent_at is None and open_left < expected:
            first_sent_at = time.perf_counter() - started
        if open_left == 0:
            break
    seconds = time.perf_counter() - started
    cpu = group_cpu_seconds(hub.pgids()) - cpu_before
    beat_cpu = group_cpu_seconds([hub.beat.pid]) - beat_before
    pg_cpu, pg_sampled = postgres_cpu_seconds() - pg_before, backends.seconds()
    # The steady rate: from 10 % to 90 % done (no planning, no start-up, no tail).
    low = next((s for s in samples if s[1] >= 0.1 * expected), samples[0])
    high = next((s for s in samples if s[1] >= 0.9 * expected), samples[-1])
    steady = (high[1] - low[1]) / (high[0] - low[0]) if high[0] > low[0] else 0.0
    statuses: dict[str, int] = {}
    for status in Message.objects.filter(campaign=created).values_list("status", flat=True):
        statuses[status] = statuses.get(status, 0) + 1
    counts = sandbox_call(sandbox_url, "/_sandbox/counts")
    return {
        "seconds": seconds, "planned": planned, "first_sent": first_sent_at, "open_left": open_left,
        "statuses": statuses, "received": counts["total"], "addresses": counts["addresses"],
        "duplicates": len(counts["duplicates"]), "cpu": cpu, "beat_cpu": beat_cpu, "pg_cpu": pg_cpu, "pg_sampled": pg_sampled, "steady": steady, "load": load(),
    }  # fmt: skip


def bare_sendgrid(url: str, n: int) -> float:
    """The SDK alone: personalized payloads (1,000 a request) built and posted inside the clock."""
    from sendgrid import SendGridAPIClient

    client = SendGridAPIClient("SG.bench", host=url)
    headers = {"List-Unsubscribe": "<https://hub.test/u/x/>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    started = time.perf_counter()
    for start in range(0, n, 1000):
        payload = {
            "personalizations": [
                {"to": [{"email": f"p{i}@example.test"}], "custom_args": {"mh_message_id": str(i)}, "headers": headers,
                 "substitutions": {"-s-": f"Hi C{i}", "-h-": f"<p>Hello C{i}</p>", "-t-": f"Hello C{i}"}}
                for i in range(start, min(start + 1000, n))
            ],
            "from": {"email": "news@brand.test"},
            "subject": "-s-",
            "content": [{"type": "text/plain", "value": "-t-"}, {"type": "text/html", "value": "-h-"}],
        }  # fmt: skip
        client.client.mail.send.post(request_body=payload)
    return n / (time.perf_counter() - started)


def bare_sendgrid_each(url: str, n: int) -> float:
    """The SDK as its README shows it, one ``Mail`` a request, in a sequential loop: the email
    counterpart of the SMS phase's ``client.messages.create`` loop (same content as the batch loop)."""
    from sendgrid import SendGridAPIClient
    from sendgrid.helpers.mail import CustomArg, Header, Mail

    client = SendGridAPIClient("SG.bench", host=url)
    started = time.perf_counter()
    for i in range(n):
        mail = Mail(
            from_email="news@brand.test", to_emails=f"e{i}@example.test", subject=f"Hi C{i}",
            html_content=f"<p>Hello C{i}</p>", plain_text_content=f"Hello C{i}",
        )  # fmt: skip
        mail.custom_arg = CustomArg("mh_message_id", str(i))
        mail.header = Header("List-Unsubscribe", "<https://hub.test/u/x/>")
        mail.header = Header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
        client.send(mail)
    return n / (time.perf_counter() - started)


def bare_twilio(url: str, n: int) -> float:
    from twilio.rest import Client

    client = Client("AC" + "1" * 32, "bench-token")
    client.api.base_url = url
    started = time.perf_counter()
    for i in range(n):
        client.messages.create(to=f"+1415{i:07d}1", from_="+14155550000", body=f"Hi C{i}, 20% off today")
    return n / (time.perf_counter() - started)


def report(label: str, n: int, result: dict, goal: str, bare: float | None = None, bare_label: str = "") -> None:
    rate = n / result["seconds"]
    ok = result["statuses"].get("sent", 0) == n and result["received"] == n and not result["duplicates"]
    line = (
        f"{label}: {n:,} msgs launch->all sent {result['seconds']:.1f} s = {rate:,.0f} msgs/s "
        f"(planning {result['planned']:.1f} s, first sent at {result['first_sent'] or 0:.1f} s, "
        f"steady 10-90 % {result['steady']:,.0f}/s; CPU s: worker+beat {result['cpu']:.1f} "
        f"(beat {result['beat_cpu']:.1f}), "
        f"postgres {result['pg_cpu']:.1f}, sampled every second {result['pg_sampled']:.1f})"
    )
    if bare:
        line += f"; bare {bare_label} {bare:,.0f} msgs/s, ratio {rate / bare:.2f}"
    print(f"{line}; goal {goal}; {result['load']}")
    print(f"    statuses {result['statuses']}, sandbox received {result['received']:,} "
          f"({result['addresses']:,} addresses, {result['duplicates']} duplicated) {'OK' if ok else 'NOT OK'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=100_000)
    parser.add_argument("--sms", type=int, default=100_000)
    parser.add_argument("--bare-sms", type=int, default=5_000)
    parser.add_argument("--bare-email-each", type=int, default=5_000)
    parser.add_argument("--limited", type=int, default=6_000)
    parser.add_argument("--limited-rate", type=float, default=100)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--public-url", default="http://127.0.0.1:9")  # no callbacks in this benchmark
    parser.add_argument("--db-name", default=os.environ.get("BENCH_DB_NAME", DB_NAME))
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS", REDIS))
    parser.add_argument("--redis-dbs", default=os.environ.get("BENCH_REDIS_DBS", ",".join(map(str, REDIS_DBS))))
    parser.add_argument("--sandbox-port", type=int, default=int(os.environ.get("BENCH_SANDBOX_PORT", 0)))
    parser.add_argument("--profile", choices=["email", "sms"], help="in-process cProfile of dispatch + send only")
    args = parser.parse_args()

    prepare_environment(args)
    import django

    django.setup()
    from campaigns.tests.factories import contacts, template
    from marketing_hub.tests.factories import BrandFactory

    sandbox, sandbox_url = start_sandbox(callbacks=False, port=args.sandbox_port)
    hub = None
    try:
        brand = BrandFactory(slug="bench", name="Bench")
        size = args.emails if args.profile == "email" else args.sms if args.profile else 0
        size = size or max(args.emails, args.sms, args.limited)
        started = time.perf_counter()
        contact_list, created = contacts(brand, size, consent=("email", "sms"))
        print(f"{size:,} contacts with consent in {time.perf_counter() - started:.1f} s; cores {os.cpu_count()}")
        tpl = template(brand)
        if args.profile:
            profile(brand, contact_list, _account(brand, args.profile, sandbox_url, 1e6), tpl, size)
            return
        hub = Hub(args.workers, args.concurrency)
        print(f"hub: beat + {args.workers} worker(s) x {args.concurrency} prefork processes; {load()}")
        time.sleep(3)

        if args.emails:
            email = _account(brand, "email", sandbox_url, 1e6)
            email_list = _list_of(brand, "Email audience", created[: args.emails])
            result = run_campaign(hub, brand, email_list, email, tpl, sandbox_url, args.emails, args.timeout)
            bare_each = bare_sendgrid_each(sandbox_url, args.bare_email_each)
            bare = bare_sendgrid(sandbox_url, args.emails)
            report("EMAIL (SendGrid)", args.emails, result, ">= 5,000/s, ratio >= 0.5", bare_each,
                   f"sequential client.send(Mail) ({args.bare_email_each:,} msgs)")  # fmt: skip
            print(f"    beside the SDK's batch loop (1,000 personalizations a request, substitutions for the "
                  f"only personal parts, payloads built in the clock; no rendering, no tracking): {bare:,.0f} "
                  f"msgs/s, ratio {args.emails / result['seconds'] / bare:.2f}")  # fmt: skip
        if args.sms:
            sms = _account(brand, "sms", sandbox_url, 1e6)
            sms_list = _list_of(brand, "SMS audience", created[: args.sms])
            result = run_campaign(hub, brand, sms_list, sms, tpl, sandbox_url, args.sms, args.timeout)
            bare = bare_twilio(sandbox_url, args.bare_sms)
            report("SMS (Twilio)", args.sms, result, ">= 1,000/s, ratio >= 0.5", bare,
                   f"sequential client.messages.create ({args.bare_sms:,} msgs)")  # fmt: skip
        if args.limited:
            limited = _account(brand, "sms", sandbox_url, args.limited_rate)
            limited_list = _list_of(brand, "Limited audience", created[: args.limited])
            result = run_campaign(hub, brand, limited_list, limited, tpl, sandbox_url, args.limited, args.timeout)
            report(f"LIMITED SMS ({args.limited_rate:g}/s)", args.limited, result, "rate kept, < 0.10 cores")
            rate = args.limited / result["seconds"]
            print(f"    achieved {rate:.1f} msgs/s of {args.limited_rate:g}/s = {rate / args.limited_rate:.1%}; "
                  f"worker+beat CPU {result['cpu']:.1f} s in {result['seconds']:.1f} s = "
                  f"{result['cpu'] / result['seconds']:.1%} of a core")  # fmt: skip
    finally:
        if hub:
            hub.stop()
        sandbox.terminate()
        sandbox.wait(10)


def profile(brand, contact_list, acc, tpl, expected: int) -> None:
    """Dispatcher and sender in this process under cProfile (no Celery): where the CPU goes."""
    import cProfile
    import pstats

    from campaigns import dispatcher, sender, services
    from campaigns.models import Message
    from campaigns.tests.factories import campaign

    created = campaign(brand, contact_list, [(acc, tpl)], name="profiled")
    started = time.perf_counter()
    with _no_kick():
        services.launch(created, "bench")
    print(f"planned {expected:,} in {time.perf_counter() - started:.2f} s")
    batches: list[list[int]] = []
    dispatch_s = send_s = 0.0  # CPU seconds of this process (the machine is shared: wall time is noisy)
    dispatch_profile, send_profile = cProfile.Profile(), cProfile.Profile()
    while True:
        t0 = time.process_time()
        dispatch_profile.enable()
        queued = dispatcher.dispatch(enqueue=lambda _channel, ids: batches.append(ids))
        dispatch_profile.disable()
        dispatch_s += time.process_time() - t0
        if not queued and not batches:
            break
        t0 = time.process_time()
        send_profile.enable()
        while batches:
            sender.send_batch(batches.pop())
        send_profile.disable()
        send_s += time.process_time() - t0
    sent = Message.objects.filter(campaign=created, status="sent").count()
    print(f"{sent:,} sent; CPU under cProfile: dispatch {dispatch_s:.2f} s ({1000 * dispatch_s / expected:.3f} ms/msg), "
          f"send {send_s:.2f} s ({1000 * send_s / expected:.3f} ms/msg); {load()}")  # fmt: skip
    print("== dispatcher ==")
    pstats.Stats(dispatch_profile).sort_stats("cumulative").print_stats(20)
    print("== sender ==")
    stats = pstats.Stats(send_profile)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(25)


class _no_kick:
    """Launch without the dispatch task (no broker in the profile)."""

    def __enter__(self):
        from campaigns import services

        self.saved, services._kick = services._kick, lambda: None

    def __exit__(self, *exc):
        from campaigns import services

        services._kick = self.saved


def _account(brand, channel: str, sandbox_url: str, rate: float):
    """A sender account against the sandbox, no daily quota, named after its rate (names are unique)."""
    from campaigns.tests.factories import account

    created = account(brand, channel, base_url=sandbox_url, rate_per_second=rate)
    created.name = f"{channel} {rate:g}/s"
    created.save(update_fields=["name"])
    return created


def start_sandbox(callbacks: bool, port: int = 0, **settings) -> tuple[subprocess.Popen, str]:
    """The provider sandbox in its own process (its CPU is not ours), bodies not recorded; port 0: a free one."""
    from channels.sandbox import spawn

    env = {**os.environ, "SANDBOX_CALLBACKS": str(callbacks).lower(), "SANDBOX_RECORD_BODIES": "false"}
    env.update({f"SANDBOX_{key.upper()}": str(value) for key, value in settings.items()})
    return spawn(env, log=open(Path(os.environ["VAR_DIR"]) / "sandbox.log", "a"), port=port)


def _list_of(brand, name: str, members: list):
    from audiences.models import ContactList, ListMembership

    contact_list = ContactList.objects.create(brand=brand, name=name)
    ListMembership.objects.bulk_create(
        [ListMembership(contact_list=contact_list, contact=c) for c in members], batch_size=5000
    )
    return contact_list


if __name__ == "__main__":
    main()
