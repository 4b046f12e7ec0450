from celery import shared_task
from django.core.cache import cache
from django.utils import timezone

HEARTBEAT_CACHE_KEY = "hub:beat:heartbeat"


@shared_task(name="marketing_hub.tasks.ping")
def ping() -> str:
    return "pong"


@shared_task(name="marketing_hub.tasks.heartbeat")
def heartbeat() -> str:
    now = timezone.now().isoformat()
    cache.set(HEARTBEAT_CACHE_KEY, now, timeout=3600)
    return now
