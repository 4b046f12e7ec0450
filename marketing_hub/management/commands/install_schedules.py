from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from marketing_hub.schedules import PERIODIC_TASKS

PREFIX = "hub:"


class Command(BaseCommand):
    help = "Install the periodic tasks declared in marketing_hub/schedules.py (idempotent)."

    @transaction.atomic
    def handle(self, *args, **options):
        created = updated = 0
        for name, spec in PERIODIC_TASKS.items():
            interval, _ = IntervalSchedule.objects.get_or_create(
                every=spec.every_seconds, period=IntervalSchedule.SECONDS
            )
            wanted = {
                "task": spec.task,
                "interval": interval,
                "queue": spec.queue,
                "description": spec.description,
                "enabled": True,
            }
            task, was_created = PeriodicTask.objects.get_or_create(name=PREFIX + name, defaults=wanted)
            if was_created:
                created += 1
                continue
            changed = [field for field, value in wanted.items() if getattr(task, field) != value]
            if changed:
                for field in changed:
                    setattr(task, field, wanted[field])
                task.save()
                updated += 1
        stale = PeriodicTask.objects.filter(name__startswith=PREFIX, enabled=True).exclude(
            name__in=[PREFIX + name for name in PERIODIC_TASKS]
        )
        disabled = stale.update(enabled=False)
        self.stdout.write(f"schedules: {created} created, {updated} updated, {disabled} disabled")
