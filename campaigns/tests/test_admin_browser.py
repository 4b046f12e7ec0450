"""In Chromium: a marketer creates a campaign in the admin, launches it against the sandbox (real beat
and worker processes) and watches the progress bar reach 100 %."""

import time

import pytest
from django.db import connection

from campaigns.tests.factories import account, contacts, template
from marketing_hub import processes
from marketing_hub.roles import Role
from marketing_hub.tests.factories import member

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_create_launch_and_watch_a_campaign_complete(
    live_server, page, screenshot, brand_a, sandbox_process, settings, tmp_path, clean_broker
):
    settings.PUBLIC_BASE_URL = live_server.url
    member(brand_a, Role.MARKETER, username="marketer")
    contacts(brand_a, 300, consent=("email",), list_name="Spring list")
    email = account(brand_a, "email", base_url=sandbox_process.url, rate_per_second=200)
    offer = template(brand_a, name="Spring offer")
    env = processes.environment(DATABASE_URL=processes.database_url(connection.settings_dict),
                                PUBLIC_BASE_URL=live_server.url, LOG_LEVEL="WARNING")  # fmt: skip
    processes.manage(env, "install_schedules")
    beat = processes.start_beat(env, tmp_path / "beat")
    worker = processes.start_worker(env, "browser", pool="prefork", concurrency=2)
    try:
        page.goto(f"{live_server.url}/admin/")
        page.fill("#id_username", "marketer")
        page.fill("#id_password", "pw-for-tests-1")
        page.click("input[type=submit]")
        page.goto(f"{live_server.url}/admin/campaigns/campaign/add/")
        page.select_option("#id_brand", str(brand_a.pk))
        page.fill("#id_name", "Spring in the browser")
        page.select_option("#id_lists_from", label="Spring list")
        page.click("#id_lists_add")
        page.select_option("#id_channels-0-account", str(email.pk))
        page.select_option("#id_channels-0-template", str(offer.pk))
        page.click("input[name=_save]")
        page.wait_for_selector("#result_list")
        assert "Spring in the browser" in page.inner_text("#result_list")

        page.check("#result_list input.action-select")
        page.select_option("select[name=action]", "launch")
        page.click("button[name=index]")
        page.wait_for_selector(".messagelist")
        assert "Launched 1 campaign" in page.inner_text(".messagelist")

        percent, deadline = "0", time.monotonic() + 90
        while time.monotonic() < deadline:
            page.reload()
            percent = page.get_attribute("#result_list .mh-progress-bar", "data-percent")
            if percent in ("100", "100.0"):
                break
            time.sleep(1)
        screenshot(page, "admin-campaign-progress")
        assert percent in ("100", "100.0")
    finally:
        processes.kill(worker)
        processes.kill(beat)
    assert len(sandbox_process.counts()) == 300
