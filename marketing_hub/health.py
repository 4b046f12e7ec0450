"""``GET /healthz``: is the database, the broker and the cache reachable? 200 or 503."""

import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .celery import app as celery_app
from .tasks import HEARTBEAT_CACHE_KEY


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    with celery_app.connection_for_write(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def _cache() -> None:
    token = str(time.monotonic())
    cache.set("hub:healthz", token, timeout=10)
    if cache.get("hub:healthz") != token:
        raise RuntimeError("value written was not read back")


CHECKS = {"database": _database, "broker": _broker, "cache": _cache}


@never_cache
@require_GET
def healthz(request):
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001  (any failure is the answer, not a crash)
            results[name] = f"failed: {type(exc).__name__}"
    healthy = all(value == "ok" for value in results.values())
    try:
        beat = cache.get(HEARTBEAT_CACHE_KEY)
    except Exception:  # noqa: BLE001
        beat = None
    body = {"status": "ok" if healthy else "unavailable", "checks": results, "beat_last_seen": beat}
    return JsonResponse(body, status=200 if healthy else 503)
