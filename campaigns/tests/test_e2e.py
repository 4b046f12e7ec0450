"""Real worker processes, real beat, the sandbox: workers are SIGKILLed again and again mid-campaign.

Afterwards no address has received a message twice and every recipient is in a final state. Sandbox
callbacks reach the hub (a live server), so messages whose worker died during the provider call are
settled by the provider's own report instead of being resent.
"""

import random
import time

import pytest
from django.db import connection

from campaigns import services
from campaigns.models import Message
from campaigns.tests.factories import account, campaign, contacts, template
from marketing_hub import processes

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
FINAL = {"sent", "delivered", "failed", "unknown", "skipped", "cancelled"}
OPEN = ("pending", "queued", "sending")


def _wait_for_callbacks(sandbox, deadline: float) -> None:
    """Until the sandbox has no callback left to post (they settle 'sent' and 'unknown' messages)."""
    while time.monotonic() < deadline:
        state = sandbox.state()
        if not state["callbacks_pending"]:
            return
        time.sleep(0.5)


def run_chaos(
    brand, sandbox, public_url: str, workdir, recipients: int, kills: int, rate: float, timeout=180, settle=120
) -> dict:
    """Launch an SMS campaign, SIGKILL a worker ``kills`` times while it sends, wait until nothing is
    open, then (at most ``settle`` seconds) until the sandbox has posted every callback."""
    sandbox.configure(callbacks=True, callback_delay_ms=50, latency_ms=2)
    contact_list, _ = contacts(brand, recipients, consent=("sms",))
    sms = account(brand, "sms", base_url=sandbox.url, rate_per_second=rate)
    spring = campaign(brand, contact_list, [(sms, template(brand))])
    env = processes.environment(
        DATABASE_URL=processes.database_url(connection.settings_dict), PUBLIC_BASE_URL=public_url,
        SEND_STALE_QUEUED_SECONDS=3, SEND_STALE_SENDING_SECONDS=4, LOG_LEVEL="WARNING",
    )  # fmt: skip
    processes.manage(env, "install_schedules")
    beat = processes.start_beat(env, workdir / "beat")
    workers = [processes.start_worker(env, f"w{i}", pool="prefork", concurrency=2) for i in range(2)]
    killed, started = 0, time.monotonic()
    try:
        services.launch(spring, "e2e")  # the launch kick and beat's tick both dispatch
        while time.monotonic() - started < timeout:
            time.sleep(random.uniform(0.4, 1.0))
            sending = Message.objects.filter(campaign=spring, status__in=["sending", "sent", "delivered"]).exists()
            if killed < kills and sending:
                index = random.randrange(len(workers))
                processes.kill(workers[index])
                workers[index] = processes.start_worker(env, f"w{index}-{killed}", pool="prefork", concurrency=2)
                killed += 1
            elif killed >= kills and not Message.objects.filter(campaign=spring, status__in=OPEN).exists():
                break
    finally:
        for process in [*workers, beat]:
            processes.kill(process)
    _wait_for_callbacks(sandbox, deadline=time.monotonic() + settle)
    statuses: dict[str, int] = {}
    for status in Message.objects.filter(campaign=spring).values_list("status", flat=True):
        statuses[status] = statuses.get(status, 0) + 1
    addresses = dict(Message.objects.filter(campaign=spring).values_list("address", "status"))
    return {"statuses": statuses, "killed": killed, "addresses": addresses, "seconds": time.monotonic() - started}


def test_killing_workers_mid_campaign_never_sends_twice_and_leaves_nothing_open(
    brand_a, sandbox_process, live_server, settings, tmp_path, clean_broker
):
    settings.PUBLIC_BASE_URL = live_server.url  # the callbacks' signatures are checked against it
    result = run_chaos(brand_a, sandbox_process, live_server.url, tmp_path, recipients=2000, kills=5, rate=500)
    assert result["killed"] == 5
    assert set(result["statuses"]) <= FINAL, result["statuses"]
    assert sum(result["statuses"].values()) == 2000
    counts = sandbox_process.counts()
    assert counts and max(counts.values()) == 1, "an address received a message twice"
    sent = {a for a, s in result["addresses"].items() if s in ("sent", "delivered")}
    assert sent <= set(counts)  # nothing claims 'sent' that the provider never got
    unknown = {a for a, s in result["addresses"].items() if s == "unknown"}
    assert set(counts) <= sent | unknown  # and nothing the provider got is unaccounted for
