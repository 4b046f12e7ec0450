"""Fixtures shared by every app's tests. Real PostgreSQL and Redis: see the Makefile's TEST_ENV."""

import os
from pathlib import Path

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from marketing_hub.roles import Role
from marketing_hub.tests.factories import BrandFactory, api_key, member


def purge_broker() -> None:
    """Drop tasks earlier tests left on the real broker (launch kicks a dispatch), so a worker
    started by a test runs that test's tasks, not a backlog."""
    from marketing_hub.celery import ALL_QUEUES, app

    with app.connection_for_write() as connection:
        for queue in ALL_QUEUES:
            connection.default_channel.queue_purge(queue)


@pytest.fixture
def clean_broker():
    purge_broker()
    yield
    purge_broker()


@pytest.fixture(scope="session")
def _sandbox_server():
    from channels.sandbox import running

    with running() as server:
        yield server


@pytest.fixture
def sandbox(_sandbox_server):
    """The provider sandbox (real HTTP on loopback), reset and with default behaviour for each test."""
    import dataclasses

    from channels.sandbox import Config

    server, url, smtp_port = _sandbox_server
    server.config = Config(callbacks=False)
    server.requests.clear()
    server.counts.clear()
    server.url, server.smtp_port = url, smtp_port
    server.configure = lambda **changes: setattr(server, "config", dataclasses.replace(server.config, **changes))
    return server


class SandboxProcess:
    """The sandbox in its own process (as in production and benchmarks), driven over HTTP."""

    def __init__(self, url: str, process):
        self.url, self.process = url, process

    def _call(self, path: str, data: dict | None = None) -> dict:
        import json
        import urllib.request

        body = json.dumps(data).encode() if data is not None else None
        request = urllib.request.Request(self.url + path, data=body, method="POST" if body is not None else "GET")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def configure(self, **changes) -> dict:
        return self._call("/_sandbox/config", changes)

    def counts(self) -> dict[str, int]:
        return self._call("/_sandbox/counts?full=1")["counts"]

    def state(self) -> dict:
        """Totals, duplicates and callbacks (sent, failed, pending), without the per-address counts."""
        return self._call("/_sandbox/counts")


@pytest.fixture
def sandbox_process():
    from channels.sandbox import spawn

    process, url = spawn()
    yield SandboxProcess(url, process)
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(autouse=True)
def _clean_cache():
    cache.clear()
    yield


@pytest.fixture
def brand_a(db):
    return BrandFactory(slug="brand-a", name="Brand A")


@pytest.fixture
def brand_b(db):
    return BrandFactory(slug="brand-b", name="Brand B")


@pytest.fixture
def marketer_a(brand_a):
    return member(brand_a, Role.MARKETER, username="marketer-a")


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def key_client(brand_a):
    """An API client authenticated with a Marketer key of brand A."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key(brand_a, Role.MARKETER)}")
    return client


@pytest.fixture
def admin_key_client(brand_a):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key(brand_a, Role.ADMIN)}")
    return client


# -- browser tests: Playwright driving Debian's Chromium (no browser download) ------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parent / "artifacts" / "screenshots"


@pytest.fixture(scope="session")
def chromium():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls made by the test
    # itself are still synchronous and safe.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def screenshot():
    def save(page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
