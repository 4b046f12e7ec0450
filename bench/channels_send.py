"""Send throughput of the adapters against the provider sandbox, beside a bare SDK loop.

    .venv/bin/python bench/channels_send.py [--emails 50000] [--sms 5000] [--concurrency 16]

The sandbox runs in its own process (latency 0, no callbacks, bodies not recorded) so this process's
GIL measures only our side. Figures: SendGrid messages/s through ``SendGridAdapter.send`` (1,000
personalized messages a request) against a bare loop posting prebuilt 1,000-personalization
payloads with the same SDK; Twilio SMS messages/s through ``TwilioSmsAdapter.send`` (one request a
message, ``concurrency`` threads) against a bare sequential ``client.messages.create`` loop.
Goals (issue 4): SendGrid >= 10,000/s, Twilio SMS >= 1,000/s.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sendgrid import SendGridAPIClient  # noqa: E402
from twilio.rest import Client  # noqa: E402

from channels.providers import OutboundMessage, ProviderConfig, get_adapter  # noqa: E402
from channels.sandbox import spawn  # noqa: E402

TWILIO = {"account_sid": "AC" + "1" * 32, "auth_token": "bench-token"}


def start_sandbox() -> tuple[subprocess.Popen, str]:
    return spawn({**os.environ, "SANDBOX_CALLBACKS": "false", "SANDBOX_RECORD_BODIES": "false"})


def sandbox_total(url: str) -> int:
    return json.loads(urllib.request.urlopen(url + "/_sandbox/counts", timeout=5).read())["total"]


def reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url + "/_sandbox/reset", method="POST"), timeout=5).read()


def rate(count: int, started: float) -> float:
    return count / (time.perf_counter() - started)


def emails(n: int) -> list[OutboundMessage]:
    headers = {"List-Unsubscribe": "<https://hub.test/u/x/>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    return [
        OutboundMessage(
            message_id=str(i),
            to=f"p{i}@example.test",
            subject=f"Offer for {i}",
            html=f"<p>Hello {i}, here is your offer.</p>",
            body=f"Hello {i}, here is your offer.",
            headers=headers,
        )
        for i in range(n)
    ]


def bare_sendgrid_payload(messages: list[OutboundMessage]) -> dict:
    """What the adapter sends, written by hand and built before the clock starts."""
    return {
        "personalizations": [
            {"to": [{"email": m.to}], "custom_args": {"mh_message_id": m.message_id}, "headers": m.headers,
             "substitutions": {"-s-": m.subject, "-h-": m.html, "-t-": m.body}}
            for m in messages
        ],
        "from": {"email": "news@brand.test"},
        "subject": "-s-",
        "content": [{"type": "text/plain", "value": "-t-"}, {"type": "text/html", "value": "-h-"}],
    }  # fmt: skip


def configure(url: str, **changes) -> None:
    request = urllib.request.Request(url + "/_sandbox/config", data=json.dumps(changes).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    urllib.request.urlopen(request, timeout=5).read()


def bench_sendgrid_with_events(url: str, n: int) -> float:
    """The same, with the sandbox posting signed delivered/open/click events (to its own sink)."""
    reset(url)
    configure(url, callbacks=True, callback_delay_ms=50, open_rate=0.3, click_rate=0.1,
              sendgrid_events_url=url + "/_sandbox/sink")  # fmt: skip
    config = ProviderConfig("sendgrid", "email", {"api_key": "SG.bench"}, {"from_email": "news@brand.test"}, url)
    adapter = get_adapter(config)
    messages = emails(n)
    started = time.perf_counter()
    for start in range(0, n, 1000):
        assert all(r.accepted for r in adapter.send(messages[start : start + 1000]))
    ours = rate(n, started)
    configure(url, callbacks=False)
    return ours


def bench_sendgrid(url: str, n: int) -> tuple[float, float]:
    reset(url)
    config = ProviderConfig("sendgrid", "email", {"api_key": "SG.bench"}, {"from_email": "news@brand.test"}, url)
    adapter = get_adapter(config)
    messages = emails(n)
    started = time.perf_counter()
    for start in range(0, n, 1000):
        results = adapter.send(messages[start : start + 1000])
        assert all(r.accepted for r in results), results[0].error
    ours = rate(n, started)

    client = SendGridAPIClient("SG.bench", host=url)
    payloads = [bare_sendgrid_payload(messages[start : start + 1000]) for start in range(0, n, 1000)]
    started = time.perf_counter()
    for payload in payloads:
        client.client.mail.send.post(request_body=payload)
    bare = rate(n, started)
    assert sandbox_total(url) == 2 * n
    return ours, bare


def bench_twilio(url: str, n: int, concurrency: int) -> tuple[float, float]:
    reset(url)
    config = ProviderConfig("twilio_sms", "sms", TWILIO, {"from_number": "+14155550000"}, url, concurrency=concurrency)
    adapter = get_adapter(config)
    messages = [
        OutboundMessage(message_id=str(i), to=f"+1415{i:07d}1", body=f"Hi {i}, 20% off today") for i in range(n)
    ]
    started = time.perf_counter()
    for start in range(0, n, 500):
        results = adapter.send(messages[start : start + 500])
        assert all(r.accepted for r in results), results[0].error
    ours = rate(n, started)

    client = Client(TWILIO["account_sid"], TWILIO["auth_token"])
    client.api.base_url = url
    started = time.perf_counter()
    for i in range(n):
        client.messages.create(to=f"+1415{i:07d}1", from_="+14155550000", body=f"Hi {i}, 20% off today")
    bare = rate(n, started)
    assert sandbox_total(url) == 2 * n
    return ours, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=50_000)
    parser.add_argument("--sms", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    process, url = start_sandbox()
    try:
        ours, bare = bench_sendgrid(url, args.emails)
        print(f"SendGrid  {args.emails:>7} emails: adapter {ours:>9,.0f}/s  bare SDK loop {bare:>9,.0f}/s  "
              f"ratio {ours / bare:.2f}  (goal >= 10,000/s)")  # fmt: skip
        with_events = bench_sendgrid_with_events(url, args.emails)
        print(
            f"SendGrid  {args.emails:>7} emails: adapter {with_events:>9,.0f}/s  with the sandbox posting signed events"
        )
        ours, bare = bench_twilio(url, args.sms, args.concurrency)
        print(f"Twilio SMS {args.sms:>6} msgs:   adapter {ours:>9,.0f}/s  bare SDK loop {bare:>9,.0f}/s  "
              f"ratio {ours / bare:.2f}  (concurrency {args.concurrency}; goal >= 1,000/s)")  # fmt: skip
    finally:
        process.terminate()
        process.wait(10)


if __name__ == "__main__":
    main()
