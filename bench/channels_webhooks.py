"""Webhook ingestion: signed status callbacks per second, end to end (verified, logged, stored,
normalized, the message moved forward), beside a bare app answering 200 on the same server kind.

    .venv/bin/python bench/channels_webhooks.py --callbacks 5000 --workers 4 --concurrency 32 \
        [--sendgrid-events 20000 --batch 1000] [--no-gunicorn]

1. Twilio: one status callback ("delivered") per request, signed with the account's auth token;
2. SendGrid: "delivered" events in signed batches (ECDSA, as SendGrid posts them: up to a thousand
   events a request), one event per message.

Each phase fires every request from this process, then waits until all events are stored and all
messages moved: that is the clock. The load generator is cheap on purpose (in production Twilio's servers
send the callbacks, not this machine): ``--concurrency`` keep-alive HTTP/1.1 connections on a bare asyncio
protocol, each writing the next prebuilt request (signed before the clock starts) as soon as the previous
answer's status line and Content-Length are read; the same generator for every server, so the ratios stay
fair. ``--fast-root /work/main`` runs another checkout's serve_webhooks (A/B on the same database). The servers, one after the other on the same port:
- the fast path (``manage.py serve_webhooks``: aiohttp, group commit) beside a bare aiohttp app that
  reads the body and answers 200 (one process each);
- for reference, the Django views on gunicorn (``--workers`` sync workers) beside a bare WSGI app on
  the same gunicorn set-up; each hub server gets its own messages. ``--no-gunicorn`` skips them.
Each line gives the CPU seconds of the server (process and its workers), of its PostgreSQL backends
and of this load generator, and the load average before and after.

Creates its own PostgreSQL database (mh_bench_webhooks). Redis DB 4 is used for the cache (BENCH_REDIS
overrides the server, e.g. redis://127.0.0.1:6381).
"""

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bigdb import backends_cpu_seconds, load_line

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB = "mh_bench_webhooks"
DB_URL = f"postgres://marketing_hub:marketing_hub@127.0.0.1:5432/{DB}"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
ENV = {
    "DATABASE_URL": DB_URL,
    "REDIS_URL": f"{REDIS}/4",
    "CELERY_BROKER_URL": f"{REDIS}/5",
    "VAR_DIR": str(ROOT / "var" / "bench"),
    "LOG_LEVEL": "ERROR",
    "CONN_MAX_AGE": "60",  # gunicorn's workers keep their connection (the settings' default)
}
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())  # signs the batches; its public half goes to the account
BARE_APP = """
def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b""]
"""
BARE_AIOHTTP = """
import sys

from aiohttp import web


async def answer(request):
    await request.read()
    return web.Response(text="")


app = web.Application()
app.router.add_post("/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def sh(*args, env=None, **kwargs):
    return subprocess.run(args, cwd=ROOT, env={**os.environ, **ENV, **(env or {})}, check=True, **kwargs)


def prepare(count: int, public_url: str, email_count: int, public_key: str, hubs: list[str]):
    """The accounts, then for each hub server its own sent SMS (``count``) and emails (``email_count``)."""
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {DB}"], check=True)
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {DB} OWNER marketing_hub"],
                   check=True)  # fmt: skip
    sh(sys.executable, "manage.py", "migrate", "-v0")
    os.environ.update(ENV)
    os.environ["PUBLIC_BASE_URL"] = public_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketing_hub.settings")
    import django

    django.setup()
    from audiences.models import Contact
    from campaigns.models import Message
    from channels.models import ChannelAccount
    from marketing_hub.models import Brand

    brand = Brand.objects.create(name="Bench", slug="bench")
    account = ChannelAccount(brand=brand, name="sms", channel="sms", provider="twilio_sms", from_number="+14155550000")
    account.set_credentials({"account_sid": "AC" + "b" * 32, "auth_token": "bench-token"})
    account.save()
    email = ChannelAccount(brand=brand, name="email", channel="email", provider="sendgrid", from_email="a@b.test")
    email.set_credentials({"api_key": "SG.bench", "webhook_public_key": public_key})
    email.save()
    sets = {}
    for k, hub in enumerate(hubs):
        contacts = Contact.objects.bulk_create(
            [Contact(brand=brand, phone=f"+1415{k}{i:06d}") for i in range(count)], batch_size=5000
        )
        messages = Message.objects.bulk_create(
            [Message(brand=brand, contact=c, channel="sms", account=account, status="sent", address=c.phone,
                     provider_message_id=f"SM{k}{i:031d}") for i, c in enumerate(contacts)],
            batch_size=5000,
        )  # fmt: skip
        people = Contact.objects.bulk_create(
            [Contact(brand=brand, email=f"p{k}-{i}@example.com") for i in range(email_count)], batch_size=5000
        )
        emails = Message.objects.bulk_create(
            [Message(brand=brand, contact=c, channel="email", account=email, status="sent", address=c.email)
             for c in people],
            batch_size=5000,
        )  # fmt: skip
        sets[hub] = (k, messages, emails)
    return account, email, sets


def twilio_requests(account, messages, public: str) -> list[tuple[str, bytes, dict]]:
    from twilio.request_validator import RequestValidator

    validator = RequestValidator("bench-token")
    path = f"/webhooks/twilio/{account.pk}/status/"
    requests = []
    for message in messages:
        params = {"MessageSid": message.provider_message_id, "MessageStatus": "delivered", "To": message.address,
                  "AccountSid": "AC" + "b" * 32}  # fmt: skip
        url = f"{public}{path}?m={message.pk}"
        headers = {"X-Twilio-Signature": validator.compute_signature(url, params),
                   "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
        requests.append((url, urlencode(params).encode(), headers))
    return requests


def sendgrid_requests(email, emails, public: str, batch: int, k: int) -> list[tuple[str, bytes, dict]]:
    """Signed batches of "delivered" events, one per message, as SendGrid posts them."""
    url = f"{public}/webhooks/sendgrid/{email.pk}/events/"
    now = int(time.time())
    requests = []
    for start in range(0, len(emails), batch):
        events = [
            {"event": "delivered", "email": m.address, "timestamp": now, "sg_event_id": f"ev{k}-{m.pk}",
             "sg_message_id": f"sg-{m.pk}", "mh_message_id": str(m.pk)}
            for m in emails[start : start + batch]
        ]  # fmt: skip
        body = json.dumps(events).encode()
        timestamp = str(int(time.time()))
        signature = SENDGRID_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {"Content-Type": "application/json", "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
                   "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode()}  # fmt: skip
        requests.append((url, body, headers))
    return requests


def wait_for_port(port: int, process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"no server on port {port}")


@contextlib.contextmanager
def server(args: list[str], port: int, extra_env=None, settle: float = 0.0):
    process = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **ENV, **(extra_env or {})})
    try:
        wait_for_port(port, process)
        time.sleep(settle)  # gunicorn's workers import Django after the master binds
        yield process
    finally:
        process.terminate()
        process.wait()


def gunicorn(app: str, port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", app, "-b", f"127.0.0.1:{port}", "-w", str(workers),
            "--worker-class", "sync", "--log-level", "warning", "--backlog", "2048"]  # fmt: skip


def process_cpu(pid: int) -> float:
    """utime + stime of a process and every live descendant (gunicorn's workers), in seconds."""
    parents, ticks = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, grew = {pid}, True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sum(ticks.get(p, 0) for p in tree) / CLOCK_TICKS


def postgres_cpu() -> float:
    """utime + stime of the PostgreSQL backends of the bench database, but this script's own."""
    return backends_cpu_seconds(DB, own=False)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the load generator: writes the next prebuilt request as soon as
    the previous answer is complete, reading only the status line and how long the body is."""

    def __init__(self, load: "_Load"):
        self.load, self.buffer, self.transport, self.waiting = load, b"", None, False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.load.send(self)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while buffer:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            start = head.find(b"\r\ncontent-length:")
            if start >= 0:
                stop = head.find(b"\r\n", start + 2)
                size = end + 4 + int(head[start + 17 : stop if stop >= 0 else end])
                if len(buffer) < size:
                    break
            elif b"\r\ntransfer-encoding: chunked" in head:
                size = buffer.find(b"\r\n0\r\n\r\n", end) + 7  # the bench's answers are one small chunk
                if size < 7:
                    break
            else:
                break  # the body runs until the server closes the connection
            self.waiting = False
            self.load.answered(int(buffer[9:12]))
            buffer = buffer[size:]
            if b"\r\nconnection: close" in head:
                self.transport.close()
                return
            self.load.send(self)
        self.buffer = buffer

    def connection_lost(self, exc) -> None:
        if self.waiting:  # an answer that ran until the close, or none: status 0
            self.load.answered(int(self.buffer[9:12]) if self.buffer.startswith(b"HTTP/1.") else 0)
        self.load.closed()


class _Load:
    """``concurrency`` connections each with one request in flight until ``requests`` are all answered."""

    def __init__(self, requests: list[bytes], concurrency: int, host: str, port: int):
        self.queue, self.concurrency, self.host, self.port = list(reversed(requests)), concurrency, host, port
        self.statuses: dict[int, int] = {}
        self.open = 0
        self.done = asyncio.get_running_loop().create_future()

    def send(self, conn: _Connection) -> None:
        if self.queue:
            conn.waiting = True
            conn.transport.write(self.queue.pop())
        else:
            conn.transport.close()

    def answered(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def closed(self) -> None:
        self.open -= 1
        if self.queue:  # a server that closes after each answer (gunicorn's sync workers): connect again
            self.connect()
        elif not self.open and not self.done.done():
            self.done.set_result(None)

    def connect(self) -> None:
        self.open += 1
        task = asyncio.ensure_future(asyncio.get_running_loop().create_connection(lambda: _Connection(self), self.host,
                                                                                  self.port))  # fmt: skip
        task.add_done_callback(self._connected)

    def _connected(self, task) -> None:
        if task.exception() is not None:
            self.answered(0)
            self.open -= 1
            if self.queue:
                self.queue.pop()
            if self.queue:
                self.connect()
            elif not self.open and not self.done.done():
                self.done.set_result(None)


def prebuilt(requests: list[tuple[str, bytes, dict]]) -> list[bytes]:
    """Each request as the bytes on the wire (HTTP/1.1, keep-alive), built before the clock starts."""
    built = []
    for url, body, headers in requests:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", *(f"{k}: {v}" for k, v in headers.items()),
                 f"Content-Length: {len(body)}", "", ""]  # fmt: skip
        built.append("\r\n".join(lines).encode() + body)
    return built


async def fire(requests: list[bytes], concurrency: int, port: int) -> dict:
    load = _Load(requests, concurrency, "127.0.0.1", port)
    for _ in range(min(concurrency, len(requests))):
        load.connect()
    await load.done
    return load.statuses


@dataclass
class Run:
    count: int
    seconds: float
    statuses: dict
    server_cpu: float
    db_cpu: float
    client_cpu: float
    load: tuple[str, str]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def cpu(self) -> str:
        requests = sum(self.statuses.values()) or 1
        per = ", ".join(f"{1000 * cpu / requests:.3f}" for cpu in (self.server_cpu, self.db_cpu, self.client_cpu))
        return (f"CPU server {self.server_cpu:.1f} s + PostgreSQL {self.db_cpu:.1f} s, load generator "
                f"{self.client_cpu:.1f} s (per request {per} ms); load {self.load[0]} -> {self.load[1]}")  # fmt: skip


def measure(process, requests: list[bytes], count: int, concurrency: int, port: int, done=None) -> Run:
    """Fire the requests; with ``done``, the clock also runs until it says everything is stored."""
    load = Path("/proc/loadavg").read_text().split()[0]
    server0, db0, client0 = process_cpu(process.pid), postgres_cpu(), time.process_time()
    started = time.perf_counter()
    statuses = asyncio.run(fire(requests, concurrency, port))
    while done is not None and not done() and time.perf_counter() - started < 600:
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    client = time.process_time() - client0
    server, db = process_cpu(process.pid) - server0, postgres_cpu() - db0
    return Run(count, seconds, statuses, server, db, client, (load, Path("/proc/loadavg").read_text().split()[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callbacks", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn's sync workers")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--sendgrid-events", type=int, default=20000, help="0 skips the SendGrid phase")
    parser.add_argument("--batch", type=int, default=1000, help="SendGrid events per request")
    parser.add_argument("--no-gunicorn", action="store_true", help="skip the Django views on gunicorn")
    parser.add_argument("--fast-options", default="", help="more options for serve_webhooks, e.g. '--linger-ms 2'")
    parser.add_argument("--fast-root", default=str(ROOT),
                        help="the checkout whose serve_webhooks runs (A/B: e.g. /work/main; same database)")  # fmt: skip
    args = parser.parse_args()
    public = f"http://127.0.0.1:{args.port}"
    hubs = ["fast"] if args.no_gunicorn else ["fast", "gunicorn"]
    account, email, sets = prepare(args.callbacks, public, args.sendgrid_events, sendgrid_public_key(), hubs)
    from django.db import connection

    from campaigns.models import Message
    from channels.models import ProviderEvent, WebhookLog

    connection.close()  # no idle connection of ours through the runs (it is reopened to check)
    twilio = {hub: prebuilt(twilio_requests(account, sets[hub][1], public)) for hub in hubs}
    sendgrid = {hub: prebuilt(sendgrid_requests(email, sets[hub][2], public, args.batch, sets[hub][0]))
                for hub in hubs}  # fmt: skip
    sg_concurrency = min(args.concurrency, 8)

    def stored(hub):
        k, messages, emails = sets[hub]

        def twilio_done():
            return (ProviderEvent.objects.filter(provider_message_id__startswith=f"SM{k}").count() == len(messages)
                    and Message.objects.filter(pk__in=[messages[0].pk, messages[-1].pk], status="delivered").count() == 2
                    and Message.objects.filter(account=account, status="delivered",
                                               provider_message_id__startswith=f"SM{k}").count() == len(messages))  # fmt: skip

        def sendgrid_done():
            return (ProviderEvent.objects.filter(provider_event_id__startswith=f"ev{k}-").count() == len(emails)
                    and Message.objects.filter(pk__gte=emails[0].pk, pk__lte=emails[-1].pk,
                                               status="delivered").count() == len(emails))  # fmt: skip

        return twilio_done, sendgrid_done

    def twilio_line(label: str, run: Run, hub: str | None = None) -> str:
        line = f"{label}: {args.callbacks} signed Twilio status callbacks in {run.seconds:.1f} s = {run.rate:,.0f}/s"
        if hub:
            k = sets[hub][0]
            logged = WebhookLog.objects.filter(account=account, verdict="accepted",
                                               body__startswith=f"MessageSid=SM{k}").count()  # fmt: skip
            events = ProviderEvent.objects.filter(provider_message_id__startswith=f"SM{k}").count()
            delivered = Message.objects.filter(account=account, status="delivered",
                                               provider_message_id__startswith=f"SM{k}").count()  # fmt: skip
            line += f" (answers {run.statuses}; {logged} logged, {events} events stored, {delivered} delivered)"
        return f"{line}\n      {run.cpu()}"

    def sendgrid_line(label: str, run: Run, hub: str | None = None) -> str:
        line = (f"{label}: {args.sendgrid_events:,} SendGrid events in {len(sendgrid['fast'])} signed requests of "
                f"{args.batch} in {run.seconds:.1f} s = {run.rate:,.0f} events/s")  # fmt: skip
        if hub:
            k, _, emails = sets[hub]
            events = ProviderEvent.objects.filter(provider_event_id__startswith=f"ev{k}-").count()
            moved = Message.objects.filter(pk__gte=emails[0].pk, pk__lte=emails[-1].pk, status="delivered").count()
            line += f" (answers {run.statuses}; {events:,} events stored, {moved:,} messages delivered)"
        return f"{line}\n      {run.cpu()}"

    var = ROOT / "var" / "bench"
    var.mkdir(parents=True, exist_ok=True)
    (var / "bare_aiohttp.py").write_text(BARE_AIOHTTP)
    (var / "bare_wsgi.py").write_text(BARE_APP)
    out = []
    with server([sys.executable, str(var / "bare_aiohttp.py"), str(args.port)], args.port) as bare:
        bare_twilio = measure(bare, twilio["fast"], args.callbacks, args.concurrency, args.port)
        bare_sg = (
            measure(bare, sendgrid["fast"], args.sendgrid_events, sg_concurrency, args.port)
            if args.sendgrid_events
            else None
        )
    manage = [
        sys.executable,
        str(Path(args.fast_root) / "manage.py"),
        "serve_webhooks",
        "--port",
        str(args.port),
        *args.fast_options.split(),
    ]
    with server(manage, args.port, {"PUBLIC_BASE_URL": public}) as fast:
        twilio_done, sendgrid_done = stored("fast")
        hub_twilio = measure(fast, twilio["fast"], args.callbacks, args.concurrency, args.port, twilio_done)
        hub_sg = (measure(fast, sendgrid["fast"], args.sendgrid_events, sg_concurrency, args.port, sendgrid_done)
                  if args.sendgrid_events else None)  # fmt: skip
    out.append(twilio_line("fast path (aiohttp, group commit)", hub_twilio, "fast"))
    out.append(twilio_line("bare aiohttp app answering 200   ", bare_twilio))
    out.append(
        f"ratio fast path / bare: {hub_twilio.rate / bare_twilio.rate:.2f}   goal: >= 2,000 callbacks/s end to end"
    )
    if not args.no_gunicorn:
        with server(gunicorn("bare_wsgi:app", args.port, args.workers), args.port, {"PYTHONPATH": str(var)}, 1) as bare:
            wsgi_twilio = measure(bare, twilio["gunicorn"], args.callbacks, args.concurrency, args.port)
            wsgi_sg = (measure(bare, sendgrid["gunicorn"], args.sendgrid_events, sg_concurrency, args.port)
                       if args.sendgrid_events else None)  # fmt: skip
        app = gunicorn("marketing_hub.wsgi:application", args.port, args.workers)
        with server(app, args.port, {"PUBLIC_BASE_URL": public}, 3) as django:
            twilio_done, sendgrid_done = stored("gunicorn")
            django_twilio = measure(
                django, twilio["gunicorn"], args.callbacks, args.concurrency, args.port, twilio_done
            )
            django_sg = (measure(django, sendgrid["gunicorn"], args.sendgrid_events, sg_concurrency, args.port, sendgrid_done)
                         if args.sendgrid_events else None)  # fmt: skip
        out.append(twilio_line(f"reference: Django views on gunicorn ({args.workers} sync workers)", django_twilio,
                               "gunicorn"))  # fmt: skip
        out.append(twilio_line("reference: bare WSGI app on the same gunicorn", wsgi_twilio))
        out.append(f"ratio gunicorn hub / bare WSGI: {django_twilio.rate / wsgi_twilio.rate:.2f}")
    if args.sendgrid_events:
        out.append(sendgrid_line("fast path", hub_sg, "fast"))
        out.append(sendgrid_line("bare aiohttp", bare_sg))
        out.append(f"ratio fast path / bare: {hub_sg.rate / bare_sg.rate:.2f}")
        if not args.no_gunicorn:
            out.append(sendgrid_line("reference: gunicorn hub", django_sg, "gunicorn"))
            out.append(sendgrid_line("reference: bare WSGI", wsgi_sg))
            out.append(f"ratio gunicorn hub / bare WSGI: {django_sg.rate / wsgi_sg.rate:.2f}")
    print("\n".join(out))
    print(f"[{load_line()}]")


def sendgrid_public_key() -> str:
    der = SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


if __name__ == "__main__":
    main()
