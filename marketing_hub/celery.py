"""The Celery app: queues, routing and the periodic schedules are declared here, once."""

import os
from pathlib import Path

from celery import Celery
from celery.signals import beat_init, worker_init
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketing_hub.settings")

# One queue per channel kind, so a slow provider never holds up the others.
CHANNEL_QUEUES = ("sms", "whatsapp", "email", "telegram", "webhook")
DEFAULT_QUEUE = "default"
ALL_QUEUES = (DEFAULT_QUEUE, *CHANNEL_QUEUES)

# Task name -> queue. Tasks that send through a provider take the queue of their channel at
# call time (``queue_for_channel``); everything else runs on ``default``.
TASK_ROUTES = {
    "marketing_hub.tasks.*": {"queue": DEFAULT_QUEUE},
    "audiences.tasks.*": {"queue": DEFAULT_QUEUE},
    "analytics.tasks.*": {"queue": DEFAULT_QUEUE},
    "campaigns.tasks.dispatch": {"queue": DEFAULT_QUEUE},
    "campaigns.tasks.tick": {"queue": DEFAULT_QUEUE},
    "campaigns.tasks.run_occurrence": {"queue": DEFAULT_QUEUE},
    # campaigns.tasks.send_batch: on its channel's queue, chosen at call time (queue_for_channel).
}


def queue_for_channel(kind: str) -> str:
    if kind not in CHANNEL_QUEUES:
        raise ValueError(f"unknown channel kind {kind!r}; expected one of {', '.join(CHANNEL_QUEUES)}")
    return kind


app = Celery("marketing_hub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in ALL_QUEUES]
app.conf.task_default_queue = DEFAULT_QUEUE
app.conf.task_routes = TASK_ROUTES
app.autodiscover_tasks()

_options = app.conf.broker_transport_options or {}
for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
    # kombu's file-system transport does not create its folders.
    if _options.get(key):
        Path(_options[key]).mkdir(parents=True, exist_ok=True)
if str(app.conf.result_backend or "").startswith("file://"):
    Path(app.conf.result_backend[len("file://") :]).mkdir(parents=True, exist_ok=True)


@worker_init.connect
@beat_init.connect
def _refuse_unsafe_production(**_kwargs) -> None:
    from marketing_hub.checks import refuse_unsafe_production

    refuse_unsafe_production()
