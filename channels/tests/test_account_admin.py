"""The sender-account admin: write-only secrets, brand scoping, provider actions, key rotation."""

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import reverse

from channels.models import ChannelAccount
from channels.providers import ADAPTERS
from marketing_hub.roles import Role
from marketing_hub.tests.factories import member

SID = "AC" + "7" * 32
TOKEN = "tok-super-secret-0123456789-wxyz"
ADD = "admin:channels_channelaccount_add"
CHANGE = "admin:channels_channelaccount_change"
LIST = "admin:channels_channelaccount_changelist"


def form(brand, **values):
    data = {
        "brand": brand.pk, "name": "SMS main", "provider": "twilio_sms", "channel": "", "is_active": "on",
        "from_number": "+14155550000", "rate_per_second": "1", "daily_quota": "", "quota_window": "calendar_day",
        "cost_per_message": "0.0079", "currency": "USD", "base_url": "",
        "credential_account_sid": SID, "credential_auth_token": TOKEN,
    }  # fmt: skip
    data.update(values)
    return data


def twilio_account(brand, base_url="", **values) -> ChannelAccount:
    account = ChannelAccount(brand=brand, name=values.pop("name", "SMS main"), channel="sms", provider="twilio_sms",
                             from_number="+14155550000", base_url=base_url, **values)  # fmt: skip
    account.set_credentials({"account_sid": SID, "auth_token": TOKEN})
    account.save()
    return account


def notes(response) -> list[str]:
    """The admin messages the user sees after an action (the redirect followed)."""
    return [str(message) for message in response.context["messages"]]


@pytest.fixture
def admin_a(client, brand_a):
    client.force_login(member(brand_a, Role.ADMIN, username="admin-a"))
    return client


def test_credentials_are_stored_encrypted_and_never_shown_back(admin_a, brand_a):
    response = admin_a.post(reverse(ADD), form(brand_a))
    assert response.status_code == 302, response.context["adminform"].form.errors
    account = ChannelAccount.objects.get(brand=brand_a, name="SMS main")
    assert account.channel == "sms"  # follows from the provider
    assert account.credentials == {"account_sid": SID, "auth_token": TOKEN}
    assert TOKEN not in account.credentials_encrypted
    page = admin_a.get(reverse(CHANGE, args=[account.pk])).content.decode()
    assert TOKEN not in page and TOKEN[:12] not in page
    assert "wxyz" in page  # the mask's last four, so people can tell which token is stored


def test_blank_keeps_a_secret_and_a_provider_switch_drops_the_old_keys(admin_a, brand_a):
    account = twilio_account(brand_a)
    url = reverse(CHANGE, args=[account.pk])
    response = admin_a.post(
        url, form(brand_a, credential_account_sid="", credential_auth_token="", from_number="+14155550001")
    )
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.credentials == {"account_sid": SID, "auth_token": TOKEN} and account.from_number == "+14155550001"

    switch = form(brand_a, provider="sendgrid", from_email="news@brand.test", credential_auth_token="")
    response = admin_a.post(url, switch)
    assert response.context["adminform"].form.errors["credential_api_key"] == [
        "A sendgrid account needs the credential 'api_key'."
    ]
    response = admin_a.post(url, {**switch, "credential_api_key": "SG.new-key-123456"})
    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.channel, account.credentials) == ("email", {"api_key": "SG.new-key-123456"})


def test_channel_must_match_the_provider_and_nothing_is_saved(admin_a, brand_a):
    response = admin_a.post(reverse(ADD), form(brand_a, channel="email"))
    errors = response.context["adminform"].form.errors
    assert "sends on channel 'sms'" in errors["channel"][0]
    assert not ChannelAccount.objects.exists()


def test_telegram_accounts_get_a_webhook_secret_which_stays_write_only(admin_a, brand_a):
    data = form(brand_a, name="Bot", provider="telegram", bot_username="brand_bot", credential_account_sid="",
                credential_auth_token="", credential_bot_token="123456:AAbbCCddEEff")  # fmt: skip
    assert admin_a.post(reverse(ADD), data).status_code == 302
    bot = ChannelAccount.objects.get(name="Bot")
    generated = bot.webhook_secret
    assert len(generated) >= 32 and generated not in admin_a.get(reverse(CHANGE, args=[bot.pk])).content.decode()
    assert admin_a.post(reverse(CHANGE, args=[bot.pk]), {**data, "credential_bot_token": ""}).status_code == 302
    bot.refresh_from_db()
    assert bot.webhook_secret == generated and bot.credentials == {"bot_token": "123456:AAbbCCddEEff"}
    admin_a.post(reverse(CHANGE, args=[bot.pk]), {**data, "webhook_secret_input": "typed-secret-value"})
    bot.refresh_from_db()
    assert bot.webhook_secret == "typed-secret-value"


def test_accounts_are_brand_scoped_and_marketers_only_read(client, brand_a, brand_b):
    own, other = twilio_account(brand_a), twilio_account(brand_b)
    client.force_login(member(brand_a, Role.MARKETER, username="m"))
    listed = client.get(reverse(LIST)).context["cl"].result_list
    assert list(listed) == [own]
    assert client.get(reverse(CHANGE, args=[other.pk])).status_code == 404
    assert client.get(reverse(CHANGE, args=[own.pk])).status_code == 200  # read only
    assert client.post(reverse(CHANGE, args=[own.pk]), form(brand_a, name="Renamed")).status_code == 403
    # A brand Admin cannot create an account in a brand they do not belong to.
    client.force_login(member(brand_a, Role.ADMIN, username="a"))
    response = client.post(reverse(ADD), form(brand_b, name="Sneaky"))
    assert "brand" in response.context["adminform"].form.errors
    assert not ChannelAccount.objects.filter(name="Sneaky").exists()


def test_check_credentials_against_the_sandbox(admin_a, brand_a, sandbox, monkeypatch):
    good = twilio_account(brand_a, base_url=sandbox.url, name="Good")
    bad = twilio_account(brand_a, base_url=sandbox.url, name="Bad")
    bad.set_credentials({"account_sid": "AC" + "8" * 32, "auth_token": "wrong-token-abcd"})
    bad.save()
    sandbox.configure(twilio_auth_tokens={SID: TOKEN, "AC" + "8" * 32: "the-real-token"})
    response = admin_a.post(
        reverse(LIST), {"action": "check_credentials", "_selected_action": [good.pk, bad.pk]}, follow=True
    )
    shown = notes(response)
    assert any(n.startswith("Good") and "credentials work" in n for n in shown), shown
    assert any(n.startswith("Bad") and "refused [401 / 20003]" in n for n in shown), shown
    assert not any("wrong-token" in n or TOKEN in n for n in shown)

    # Without an adapter for the provider the admin says so instead of failing with a 500.
    monkeypatch.delitem(ADAPTERS, "twilio_sms")
    response = admin_a.post(reverse(LIST), {"action": "check_credentials", "_selected_action": [good.pk]}, follow=True)
    assert notes(response) == [
        "Good (Twilio SMS): cannot reach the provider: no adapter for provider 'twilio_sms'; known: "
        + ", ".join(sorted(ADAPTERS))
        + "."
    ]


def test_send_a_test_message_through_the_adapter(client, brand_a, sandbox):
    account = twilio_account(brand_a, base_url=sandbox.url)
    url = reverse(LIST)
    client.force_login(member(brand_a, Role.MARKETER, username="m"))
    action = {"action": "send_test_message", "_selected_action": [account.pk], "test_recipient": "+1 415 555 0101"}
    assert notes(client.post(url, action, follow=True)) == ["No action selected."]  # not offered to them
    assert sandbox.requests == []  # a Marketer may not spend the brand's money on tests

    client.force_login(member(brand_a, Role.ADMIN, username="a"))
    shown = notes(client.post(url, action, follow=True))
    (sent,) = sandbox.requests
    assert sent["to"] == "+14155550101" and "Test message from Marketing Hub" in sent["form"]["Body"]
    assert shown == [f"SMS main (Twilio SMS): test message to +14155550101 accepted (provider id {sent['id']})."]

    assert "is not a valid phone number" in notes(client.post(url, {**action, "test_recipient": "12"}, follow=True))[0]
    assert "type the test recipient" in notes(client.post(url, {**action, "test_recipient": ""}, follow=True))[0]
    shown = notes(
        client.post(url, {**action, "test_recipient": "+14155550000"}, follow=True)
    )  # the sandbox's invalid number
    assert shown[0].startswith("SMS main (Twilio SMS): Twilio SMS refused [400 / 21211]")
    assert len(sandbox.requests) == 1


def test_rotate_credentials_re_encrypts_with_the_first_key_all_or_nothing(brand_a):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(FIELD_ENCRYPTION_KEYS=[old]):
        account = twilio_account(brand_a)
        account.set_webhook_secret("hook-secret-1234")
        account.save()
        updated_at = account.updated_at
    with override_settings(FIELD_ENCRYPTION_KEYS=[new, old]):
        call_command("rotate_credentials", "--dry-run", stdout=open("/dev/null", "w"))
        account.refresh_from_db()
        assert Fernet(old.encode()).decrypt(account.credentials_encrypted.encode())  # dry run wrote nothing
        call_command("rotate_credentials", stdout=open("/dev/null", "w"))
    with override_settings(FIELD_ENCRYPTION_KEYS=[new]):
        account.refresh_from_db()
        assert account.credentials["auth_token"] == TOKEN and account.webhook_secret == "hook-secret-1234"
        assert account.updated_at == updated_at

        # A row no configured key opens stops the rotation before anything is written.
        other = twilio_account(brand_a, name="Other")
        ChannelAccount.objects.filter(pk=other.pk).update(
            credentials_encrypted=Fernet(Fernet.generate_key()).encrypt(b"{}").decode()
        )
        before = ChannelAccount.objects.get(pk=account.pk).credentials_encrypted
    with override_settings(FIELD_ENCRYPTION_KEYS=[Fernet.generate_key().decode(), new]):
        with pytest.raises(CommandError, match=f"channel account {other.pk} .*credentials_encrypted"):
            call_command("rotate_credentials")
    assert ChannelAccount.objects.get(pk=account.pk).credentials_encrypted == before
