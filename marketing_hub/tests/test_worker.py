"""A real Celery worker process over the real broker runs our tasks."""

import signal

import pytest

from marketing_hub import processes
from marketing_hub.celery import app as celery_app
from marketing_hub.tasks import ping


@pytest.mark.e2e
def test_worker_process_runs_a_task_over_the_broker(clean_broker):
    worker = processes.start_worker(processes.environment(), "ping")
    try:
        result = ping.delay()
        assert result.get(timeout=60) == "pong"
        assert celery_app.conf.broker_url.startswith(("redis://", "amqp://")), "the suite runs on a real broker"
    finally:
        processes.kill(worker, signal.SIGTERM)
