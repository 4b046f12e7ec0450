"""Starting real Celery workers and beat as subprocesses (end-to-end tests and benchmarks)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUEUES = "default,sms,whatsapp,email,telegram,webhook"


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for the connection Django uses now (e.g. the test database)."""
    user, password = settings_dict.get("USER") or "", settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{password}@" if user else ""
    host, port = settings_dict.get("HOST") or "127.0.0.1", settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


def environment(**overrides) -> dict:
    env = os.environ.copy()
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def start_worker(env: dict, name: str, pool: str = "solo", concurrency: int = 1, log=subprocess.DEVNULL):
    args = [sys.executable, "-m", "celery", "-A", "marketing_hub", "worker", "-Q", QUEUES, "-P", pool,
            "-n", f"{name}@%h", "-l", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
    if pool != "solo":
        args += ["--concurrency", str(concurrency)]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)


def start_beat(env: dict, workdir: Path, log=subprocess.DEVNULL):
    workdir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "celery", "-A", "marketing_hub", "beat", "-l", "warning",
            "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler", "--max-interval", "1"]  # fmt: skip
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)


def kill(process, sig=signal.SIGKILL) -> None:
    """Signal the process group (the main process and any pool children), then reap it."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def manage(env: dict, *args: str) -> None:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
