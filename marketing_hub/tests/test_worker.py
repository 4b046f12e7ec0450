"""A real Celery worker process over the real broker runs our tasks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from marketing_hub.celery import app as celery_app
from marketing_hub.tasks import ping

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_worker_process_runs_a_task_over_the_broker(clean_broker):
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "marketing_hub",
            "worker",
            "-Q",
            "default",
            "-P",
            "solo",
            "-l",
            "warning",
        ],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        result = ping.delay()
        assert result.get(timeout=60) == "pong"
        assert celery_app.conf.broker_url.startswith(("redis://", "amqp://")), "the suite runs on a real broker"
    finally:
        worker.terminate()
        worker.wait(timeout=30)
