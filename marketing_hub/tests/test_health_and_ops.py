"""Health check, production refusal, periodic schedules and the demo seed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings
from django_celery_beat.models import PeriodicTask

from marketing_hub.celery import app as celery_app
from marketing_hub.celery import queue_for_channel
from marketing_hub.schedules import PERIODIC_TASKS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_healthz_reports_each_part(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "cache": "ok"}


@pytest.mark.django_db
def test_healthz_names_the_unreachable_broker(client):
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/0"):
        response = client.get("/healthz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok" and checks["cache"] == "ok"
    assert checks["broker"].startswith("failed")


@pytest.mark.django_db
def test_healthz_names_the_unreachable_cache(client):
    broken = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    with override_settings(CACHES=broken):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["cache"].startswith("failed")


def _run(args, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS")}
    base.pop("FIELD_ENCRYPTION_KEYS", None)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


SAFE = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": "x" * 50,
    "ALLOWED_HOSTS": "hub.example.com",
    "FIELD_ENCRYPTION_KEYS": "Qm9ndXNrZXlCb2d1c2tleUJvZ3Vza2V5Qm9ndXNrZXk=",
}


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"DEBUG": "1"}, "DEBUG"),
        ({"SECRET_KEY": ""}, "SECRET_KEY"),
        ({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS"),
        ({"FIELD_ENCRYPTION_KEYS": ""}, "FIELD_ENCRYPTION_KEYS"),
        ({"FIELD_ENCRYPTION_KEYS": "not-a-key"}, "FIELD_ENCRYPTION_KEYS"),
    ],
)
def test_production_refuses_unsafe_settings(override, named):
    env = {**SAFE, **override}
    env = {k: v for k, v in env.items() if v != ""}
    result = _run(["manage.py", "check"], **env)
    assert result.returncode != 0
    assert named in result.stderr
    wsgi = _run(["-c", "import marketing_hub.wsgi"], **env)
    assert wsgi.returncode != 0 and "Refusing to start in production" in wsgi.stderr and named in wsgi.stderr


def test_production_starts_with_safe_settings():
    result = _run(["manage.py", "check"], **SAFE)
    assert result.returncode == 0, result.stderr
    assert _run(["-c", "import marketing_hub.wsgi"], **SAFE).returncode == 0


def test_seed_demo_refuses_in_production():
    result = _run(["manage.py", "seed_demo"], **SAFE)
    assert result.returncode != 0 and "production" in result.stderr


@pytest.mark.django_db
def test_install_schedules_is_idempotent():
    call_command("install_schedules")
    first = list(PeriodicTask.objects.filter(name__startswith="hub:").values_list("name", "task", "enabled"))
    call_command("install_schedules")
    second = list(PeriodicTask.objects.filter(name__startswith="hub:").values_list("name", "task", "enabled"))
    assert first == second
    assert {name for name, _, _ in first} == {f"hub:{name}" for name in PERIODIC_TASKS}
    PeriodicTask.objects.filter(name="hub:heartbeat").update(task="old.task", enabled=False)
    PeriodicTask.objects.create(name="hub:retired", task="old.retired", interval=PeriodicTask.objects.first().interval)
    call_command("install_schedules")
    assert PeriodicTask.objects.get(name="hub:heartbeat").task == "marketing_hub.tasks.heartbeat"
    assert PeriodicTask.objects.get(name="hub:retired").enabled is False


@pytest.mark.django_db
def test_seed_demo_is_idempotent():
    from marketing_hub.models import Brand, Membership

    call_command("seed_demo")
    call_command("seed_demo")
    assert Brand.objects.filter(slug="demo").count() == 1
    assert Membership.objects.filter(brand__slug="demo", user__username="admin", role="admin").count() == 1


def test_channel_queues_are_declared_once():
    names = {queue.name for queue in celery_app.conf.task_queues}
    assert names == {"default", "sms", "whatsapp", "email", "telegram", "webhook"}
    assert queue_for_channel("whatsapp") == "whatsapp"
    with pytest.raises(ValueError, match="unknown channel kind 'fax'"):
        queue_for_channel("fax")
