"""Every periodic task of the hub, declared in one place.

``python manage.py install_schedules`` writes them into django-celery-beat's tables; running it
again changes nothing. Entries are named ``hub:<name>`` so the command only ever touches its own.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class PeriodicTask:
    task: str
    every_seconds: int
    queue: str = "default"
    description: str = ""


PERIODIC_TASKS: dict[str, PeriodicTask] = {
    "heartbeat": PeriodicTask(
        task="marketing_hub.tasks.heartbeat",
        every_seconds=30,
        description="Beat writes a timestamp the health check reports.",
    ),
    "campaigns-tick": PeriodicTask(
        task="campaigns.tasks.tick",
        every_seconds=2,
        description="Start due campaigns, reconcile crashes, complete finished ones, dispatch due messages.",
    ),
}
