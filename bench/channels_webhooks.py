"""Webhook ingestion: signed Twilio status callbacks per second, end to end (verified, logged, stored,
normalized, the message moved forward), beside a bare WSGI app answering 200 on the same server setup.

    .venv/bin/python bench/channels_webhooks.py --callbacks 20000 --workers 4 --concurrency 64

Creates its own PostgreSQL database (mh_bench_webhooks), serves the hub with gunicorn, and fires
the callbacks with aiohttp from this process. Redis DB 4 is used for the cache.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB = "mh_bench_webhooks"
DB_URL = f"postgres://marketing_hub:marketing_hub@127.0.0.1:5432/{DB}"
ENV = {
    "DATABASE_URL": DB_URL,
    "REDIS_URL": "redis://127.0.0.1:6379/4",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/5",
    "VAR_DIR": str(ROOT / "var" / "bench"),
    "LOG_LEVEL": "ERROR",
}
BARE_APP = """
def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b""]
"""


def sh(*args, env=None, **kwargs):
    return subprocess.run(args, cwd=ROOT, env={**os.environ, **ENV, **(env or {})}, check=True, **kwargs)


def prepare(count: int, public_url: str):
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
    return account, messages


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
    args = parser.parse_args()
    public = f"http://127.0.0.1:{args.port}"
    account, messages = prepare(args.callbacks, public)
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

    bare_file = ROOT / "var" / "bench" / "bare_wsgi.py"
    bare_file.parent.mkdir(parents=True, exist_ok=True)
    bare_file.write_text(BARE_APP)
    bare = serve("bare_wsgi:app", args.port, args.workers, {"PYTHONPATH": str(bare_file.parent)})
    try:
        bare_seconds, _bare_statuses = asyncio.run(fire(requests, args.concurrency))
    finally:
        bare.terminate()
        bare.wait()
    hub = serve("marketing_hub.wsgi:application", args.port, args.workers, {"PUBLIC_BASE_URL": public})
    try:
        hub_seconds, hub_statuses = asyncio.run(fire(requests, args.concurrency))
    finally:
        hub.terminate()
        hub.wait()

    from campaigns.models import Message
    from channels.models import ProviderEvent, WebhookLog

    delivered = Message.objects.filter(status="delivered").count()
    events = ProviderEvent.objects.count()
    logged = WebhookLog.objects.filter(verdict="accepted").count()
    hub_rate, bare_rate = args.callbacks / hub_seconds, args.callbacks / bare_seconds
    print(
        f"hub:  {args.callbacks} signed Twilio status callbacks in {hub_seconds:.1f} s = {hub_rate:,.0f}/s "
        f"(answers {hub_statuses}; {logged} logged, {events} events stored, {delivered} messages delivered)"
    )
    print(f"bare: the same requests to a WSGI app answering 200: {bare_seconds:.1f} s = {bare_rate:,.0f}/s")
    print(f"ratio hub / bare: {hub_rate / bare_rate:.2f}   goal: >= 2,000 callbacks/s end to end")


if __name__ == "__main__":
    main()
