"""Webhook ingestion: signed status callbacks per second, end to end (verified, logged, stored,
normalized, the message moved forward), beside a bare WSGI app answering 200 on the same server setup.

    .venv/bin/python bench/channels_webhooks.py --callbacks 20000 --workers 4 --concurrency 64 \
        [--sendgrid-events 100000 --batch 1000]

1. Twilio: one status callback ("delivered") per request, signed with the account's auth token;
2. SendGrid: "delivered" events in signed batches (ECDSA, as SendGrid posts them: up to a thousand
   events a request), one event per message.

Creates its own PostgreSQL database (mh_bench_webhooks), serves the hub with gunicorn, and fires
the callbacks with aiohttp from this process. Redis DB 4 is used for the cache (BENCH_REDIS overrides the
server, e.g. redis://127.0.0.1:6381).
"""

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bigdb import load_line

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
}
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())  # signs the batches; its public half goes to the account
BARE_APP = """
def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b""]
"""


def sh(*args, env=None, **kwargs):
    return subprocess.run(args, cwd=ROOT, env={**os.environ, **ENV, **(env or {})}, check=True, **kwargs)


def prepare(count: int, public_url: str, email_count: int = 0, public_key: str = ""):
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
    contacts = Contact.objects.bulk_create(
        [Contact(brand=brand, phone=f"+1415{i:06d}1") for i in range(count)], batch_size=5000
    )
    messages = Message.objects.bulk_create(
        [
            Message(
                brand=brand,
                contact=c,
                channel="sms",
                account=account,
                status="sent",
                address=c.phone,
                provider_message_id=f"SM{i:032d}",
            )
            for i, c in enumerate(contacts)
        ],
        batch_size=5000,
    )
    email = ChannelAccount(brand=brand, name="email", channel="email", provider="sendgrid", from_email="a@b.test")
    email.set_credentials({"api_key": "SG.bench", "webhook_public_key": public_key})
    email.save()
    people = Contact.objects.bulk_create(
        [Contact(brand=brand, email=f"p{i}@example.com") for i in range(email_count)], batch_size=5000
    )
    emails = Message.objects.bulk_create(
        [Message(brand=brand, contact=c, channel="email", account=email, status="sent", address=c.email)
         for c in people],
        batch_size=5000,
    )  # fmt: skip
    return account, messages, email, emails


def sendgrid_requests(email, emails, public: str, batch: int) -> list[tuple[str, bytes, dict]]:
    """Signed batches of "delivered" events, one per message, as SendGrid posts them."""
    url = f"{public}/webhooks/sendgrid/{email.pk}/events/"
    now = int(time.time())
    requests = []
    for start in range(0, len(emails), batch):
        events = [
            {"event": "delivered", "email": m.address, "timestamp": now, "sg_event_id": f"ev-{m.pk}",
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


def serve(app: str, port: int, workers: int, extra_env=None):
    args = [sys.executable, "-m", "gunicorn", app, "-b", f"127.0.0.1:{port}", "-w", str(workers),
            "--worker-class", "sync", "--log-level", "warning", "--backlog", "2048"]  # fmt: skip
    process = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **ENV, **(extra_env or {})})
    time.sleep(3)
    return process


async def fire(requests: list[tuple[str, bytes, dict]], concurrency: int) -> tuple[float, dict]:
    import aiohttp

    statuses: dict[int, int] = {}
    queue = list(reversed(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker():
            while queue:
                url, body, headers = queue.pop()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callbacks", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--sendgrid-events", type=int, default=100000, help="0 skips the SendGrid phase")
    parser.add_argument("--batch", type=int, default=1000, help="SendGrid events per request")
    args = parser.parse_args()
    public = f"http://127.0.0.1:{args.port}"
    account, messages, email, emails = prepare(args.callbacks, public, args.sendgrid_events, sendgrid_public_key())
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

    batches = sendgrid_requests(email, emails, public, args.batch) if emails else []
    bare_file = ROOT / "var" / "bench" / "bare_wsgi.py"
    bare_file.parent.mkdir(parents=True, exist_ok=True)
    bare_file.write_text(BARE_APP)
    bare = serve("bare_wsgi:app", args.port, args.workers, {"PYTHONPATH": str(bare_file.parent)})
    try:
        bare_seconds, _bare_statuses = asyncio.run(fire(requests, args.concurrency))
        bare_sg_seconds = asyncio.run(fire(batches, min(args.concurrency, 8)))[0] if batches else 0
    finally:
        bare.terminate()
        bare.wait()
    hub = serve("marketing_hub.wsgi:application", args.port, args.workers, {"PUBLIC_BASE_URL": public})
    try:
        hub_seconds, hub_statuses = asyncio.run(fire(requests, args.concurrency))
        if batches:
            sg_seconds, sg_statuses = asyncio.run(fire(batches, min(args.concurrency, 8)))
    finally:
        hub.terminate()
        hub.wait()

    from campaigns.models import Message
    from channels.models import ProviderEvent, WebhookLog

    delivered = Message.objects.filter(account=account, status="delivered").count()
    events = ProviderEvent.objects.filter(account=account).count()
    logged = WebhookLog.objects.filter(account=account, verdict="accepted").count()
    hub_rate, bare_rate = args.callbacks / hub_seconds, args.callbacks / bare_seconds
    print(
        f"hub:  {args.callbacks} signed Twilio status callbacks in {hub_seconds:.1f} s = {hub_rate:,.0f}/s "
        f"(answers {hub_statuses}; {logged} logged, {events} events stored, {delivered} messages delivered)"
    )
    print(f"bare: the same requests to a WSGI app answering 200: {bare_seconds:.1f} s = {bare_rate:,.0f}/s")
    print(f"ratio hub / bare: {hub_rate / bare_rate:.2f}   goal: >= 2,000 callbacks/s end to end   [{load_line()}]")
    if batches:
        moved = Message.objects.filter(account=email, status="delivered").count()
        stored = ProviderEvent.objects.filter(account=email).count()
        rate, bare_rate = len(emails) / sg_seconds, len(emails) / bare_sg_seconds
        print(
            f"hub:  {len(emails):,} SendGrid events in {len(batches)} signed requests of {args.batch} in {sg_seconds:.1f} s "
            f"= {rate:,.0f} events/s (answers {sg_statuses}; {stored:,} events stored, {moved:,} messages delivered)"
        )
        print(
            f"bare: the same requests to a WSGI app answering 200: {bare_sg_seconds:.1f} s = {bare_rate:,.0f} events/s"
        )
        print(f"ratio hub / bare: {rate / bare_rate:.2f}   goal: >= 2,000 callbacks/s end to end   [{load_line()}]")


def sendgrid_public_key() -> str:
    der = SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


if __name__ == "__main__":
    main()
