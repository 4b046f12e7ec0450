import pytest

from marketing_hub.tests.factories import UserFactory


@pytest.mark.browser
def test_login_and_brand_list_in_chromium(live_server, page, screenshot, brand_a, brand_b):
    root = UserFactory(username="root", is_superuser=True)
    root.save()
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-for-tests-1")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    page.click('#content-main a[href="/admin/marketing_hub/brand/"]')
    page.wait_for_selector("#result_list")
    names = page.locator("#result_list tbody th a").all_inner_texts()
    assert names == ["Brand A", "Brand B"]
    path = screenshot(page, "admin-brand-list")
    assert path.stat().st_size > 10_000
