"""Chaos at scale: an SMS campaign through real workers that are SIGKILLed again and again.

    DATABASE_URL=postgres://marketing_hub:marketing_hub@127.0.0.1:5432/marketing_hub \
        .venv/bin/python bench/campaigns_chaos.py [--recipients 20000] [--kills 10] [--rate 500]

The scenario is ``run_chaos`` of campaigns/tests/test_e2e.py (2 prefork workers x 2, beat, stale
thresholds of 3 s / 4 s so the reconciler acts during the run) at benchmark scale, against its own
database ``mh_bench_send`` (dropped and created) and Redis dbs 5-7. The sandbox posts signed status
callbacks (sent, then delivered) to a live hub web server (gunicorn, ``PUBLIC_BASE_URL``), which is
what settles messages whose worker died during the provider call.

``run_chaos`` returns once nothing is pending, queued or sending; callbacks still in flight then
are waited for here (until the sandbox has none pending and the statuses stop moving, at most
``--settle`` seconds). Printed: duplicates (an address the sandbox received twice: must be 0),
final states at the end of sending and once callbacks settled, 'unknown' count, and callbacks
posted / failed.
"""

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from campaigns_send import group_cpu_seconds, load, prepare_environment, sandbox_call, start_sandbox  # noqa: E402


def start_web(port: int) -> subprocess.Popen:
    log = open(Path(os.environ["VAR_DIR"]) / "web.log", "a")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "marketing_hub.wsgi:application", "-b", f"127.0.0.1:{port}",
         "--workers", "2", "--threads", "4", "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "DEBUG": "false"}, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    for _ in range(400):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=1).read()
            return process
        except urllib.error.HTTPError:
            return process  # answering
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the hub web server did not start")


def statuses_of(campaign_id: int) -> dict[str, int]:
    from django.db.models import Count

    from campaigns.models import Message

    rows = Message.objects.filter(campaign_id=campaign_id).order_by().values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--settle", type=float, default=600)
    args = parser.parse_args()

    from channels.sandbox import free_port

    web_port = free_port()
    public_url = f"http://127.0.0.1:{web_port}"
    prepare_environment(argparse.Namespace(public_url=public_url))
    os.environ["ALLOWED_HOSTS"] = "*"
    import django

    django.setup()
    from campaigns.models import Campaign
    from campaigns.tests.test_e2e import run_chaos
    from conftest import SandboxProcess
    from marketing_hub.processes import kill
    from marketing_hub.tests.factories import BrandFactory

    sandbox_process, sandbox_url = start_sandbox(callbacks=True)
    web = start_web(web_port)
    try:
        sandbox = SandboxProcess(sandbox_url, sandbox_process)
        brand = BrandFactory(slug="chaos", name="Chaos")
        workdir = Path(os.environ["VAR_DIR"]) / "chaos"
        print(f"{args.recipients:,} recipients, {args.kills} SIGKILLs, account rate {args.rate:g}/s; {load()}")
        result = run_chaos(
            brand, sandbox, public_url, workdir, args.recipients, args.kills, args.rate, args.timeout, settle=0
        )
        campaign_id = Campaign.objects.get(brand=brand).pk
        sending_done = time.monotonic()
        print(
            f"sending done in {result['seconds']:.1f} s after {result['killed']} kills: {result['statuses']}; {load()}"
        )

        last, stable_since = None, time.monotonic()
        while time.monotonic() - sending_done < args.settle:
            counts = sandbox_call(sandbox_url, "/_sandbox/counts")
            now = statuses_of(campaign_id)
            if now != last:
                last, stable_since = now, time.monotonic()
            if counts["callbacks_pending"] == 0 and time.monotonic() - stable_since > 3:
                break
            time.sleep(1)
        settled = time.monotonic() - sending_done
        counts = sandbox_call(sandbox_url, "/_sandbox/counts?full=1")
        final = statuses_of(campaign_id)
        duplicates = {a: n for a, n in counts["counts"].items() if n > 1}
        received = set(counts["counts"])
        from campaigns.models import Message

        by_address = dict(Message.objects.filter(campaign_id=campaign_id).values_list("address", "status"))
        claimed = {a for a, s in by_address.items() if s in ("sent", "delivered")}
        unaccounted = received - {a for a, s in by_address.items() if s in ("sent", "delivered", "unknown", "failed")}
        print(f"callbacks settled {settled:.1f} s later: {final}")
        print(f"duplicates: {len(duplicates)} (must be 0); unknown: {final.get('unknown', 0)}; "
              f"still 'sent' (no delivery callback applied): {final.get('sent', 0)}; "
              f"sandbox received {counts['total']:,} for {counts['addresses']:,} addresses; "
              f"'sent'/'delivered' the provider never got: {len(claimed - received)}; received but unaccounted: "
              f"{len(unaccounted)}")  # fmt: skip
        web_cpu = group_cpu_seconds([web.pid])
        print(f"callbacks posted {counts['callbacks_sent']:,}, failed {counts['callback_failures']:,}, "
              f"pending {counts['callbacks_pending']}; hub web server CPU {web_cpu:.1f} s = "
              f"{1000 * web_cpu / max(counts['callbacks_sent'], 1):.1f} ms a callback; {load()}")  # fmt: skip
    finally:
        kill(web)
        sandbox_process.terminate()
        sandbox_process.wait(10)


if __name__ == "__main__":
    main()
