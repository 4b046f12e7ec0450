"""Each adapter through its real SDK against the sandbox over HTTP: the exact payload, the error classes."""

import json
import time

import pytest

from channels.exceptions import ProviderConfigurationError, ProviderPermanentError, ProviderTransientError
from channels.providers import OutboundMessage, ProviderConfig, get_adapter
from channels.providers.webhook import verify
from channels.sandbox import free_port
from channels.sms import sms_segments

TWILIO = {"account_sid": "AC" + "1" * 32, "auth_token": "secret-token"}


def config(provider, url, **kwargs):
    channel = {"twilio_sms": "sms", "twilio_whatsapp": "whatsapp", "sendgrid": "email", "smtp": "email"}.get(
        provider, provider
    )
    defaults = {
        "twilio_sms": (TWILIO, {"from_number": "+14155550000"}),
        "twilio_whatsapp": (TWILIO, {"from_number": "+14155550000"}),
        "sendgrid": ({"api_key": "SG.key"}, {"from_email": "news@brand.test", "from_name": "Brand"}),
        "telegram": ({"bot_token": "123:ABC"}, {}),
        "webhook": ({"url": url + "/hook", "secret": "hook-secret"}, {}),
    }
    credentials, sender = defaults.get(provider, ({}, {}))
    return ProviderConfig(provider=provider, channel=channel, credentials=kwargs.pop("credentials", credentials),
                          sender=kwargs.pop("sender", sender), base_url=url, **kwargs)  # fmt: skip


def test_twilio_sms_sends_concurrently_with_status_callbacks_and_classifies_errors(sandbox):
    adapter = get_adapter(config("twilio_sms", sandbox.url, status_callback_url="https://hub.test/cb", concurrency=4))
    batch = [OutboundMessage(message_id=str(i), to=f"+1415555010{i}", body=f"Hi {i} ✓") for i in range(5)]
    batch.append(OutboundMessage(message_id="bad", to="+14155550000", body="Hi"))
    results = adapter.send(batch)
    assert [r.accepted for r in results] == [True] * 5 + [False]
    assert results[0].provider_message_id.startswith("SM") and results[0].segments == 1
    bad = results[-1].error
    assert isinstance(bad, ProviderPermanentError) and bad.code == "21211" and bad.status == 400
    recorded = {r["to"]: r for r in sandbox.requests}
    assert recorded["+14155550103"]["form"] == {
        "To": "+14155550103", "From": "+14155550000", "Body": "Hi 3 ✓", "StatusCallback": "https://hub.test/cb?m=3",
    }  # fmt: skip
    assert recorded["+14155550103"]["account_sid"] == TWILIO["account_sid"]


def test_twilio_429_is_transient_with_retry_after_and_5xx_too(sandbox):
    adapter = get_adapter(config("twilio_sms", sandbox.url))
    sandbox.configure(rate_429=1.0, retry_after=7)
    (result,) = adapter.send([OutboundMessage(message_id="1", to="+14155550101", body="x")])
    assert isinstance(result.error, ProviderTransientError) and result.error.retry_after == 7.0
    assert result.error.code == "20429"
    sandbox.configure(rate_429=0.0, rate_5xx=1.0)
    (result,) = adapter.send([OutboundMessage(message_id="1", to="+14155550101", body="x")])
    assert isinstance(result.error, ProviderTransientError) and result.error.status == 503
    assert sandbox.requests == []


def test_twilio_whatsapp_uses_content_templates_for_business_initiated_messages(sandbox):
    adapter = get_adapter(config("twilio_whatsapp", sandbox.url))
    message = OutboundMessage(message_id="w", to="+14155550111", content_sid="HX123", content_variables={"1": "Ann"})
    (result,) = adapter.send([message])
    assert result.accepted
    (recorded,) = sandbox.requests
    assert recorded["form"] == {
        "To": "whatsapp:+14155550111", "From": "whatsapp:+14155550000", "ContentSid": "HX123",
        "ContentVariables": '{"1": "Ann"}',
    }  # fmt: skip


def test_sendgrid_sends_one_request_per_thousand_with_our_ids_and_one_click_unsubscribe(sandbox):
    adapter = get_adapter(config("sendgrid", sandbox.url))
    headers = {"List-Unsubscribe": "<https://hub.test/u/t/>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    batch = [
        OutboundMessage(
            message_id=str(i),
            to=f"p{i}@example.test",
            subject=f"Hi {i}",
            html=f"<p>Hello {i}</p>",
            body=f"Hello {i}",
            headers=headers,
        )
        for i in range(1200)
    ]
    results = adapter.send(batch)
    assert all(r.accepted for r in results) and len({r.provider_message_id for r in results}) == 1200
    recorded = {r["to"]: r for r in sandbox.requests}
    assert len(recorded) == 1200
    p7 = recorded["p7@example.test"]
    assert p7["subject"] == "Hi 7" and p7["content"] == {"text/plain": "Hello 7", "text/html": "<p>Hello 7</p>"}
    assert p7["custom_args"] == {"mh_message_id": "7"} and p7["headers"] == headers
    # 1200 messages, 2 requests: the x-message-id prefix tells requests apart.
    assert len({r.provider_message_id.split(".")[0] for r in results}) == 2


def test_sendgrid_429_fails_the_whole_request_as_transient(sandbox):
    adapter = get_adapter(config("sendgrid", sandbox.url))
    sandbox.configure(rate_429=1.0, retry_after=3)
    results = adapter.send(
        [OutboundMessage(message_id=str(i), to=f"{i}@x.test", subject="s", body="b") for i in range(3)]
    )
    assert all(isinstance(r.error, ProviderTransientError) and r.error.retry_after == 3.0 for r in results)


def test_smtp_through_djangos_backend_refuses_bounces_permanently(sandbox):
    credentials = {"host": "127.0.0.1", "port": sandbox.smtp_port}
    adapter = get_adapter(config("smtp", sandbox.url, credentials=credentials,
                                 sender={"from_email": "news@brand.test", "from_name": "Brand"}))  # fmt: skip
    ok = OutboundMessage(message_id="1", to="ann@example.test", subject="Hello", body="Hi", html="<p>Hi</p>",
                         headers={"List-Unsubscribe": "<https://hub.test/u/x/>"})  # fmt: skip
    bounce = OutboundMessage(message_id="2", to="gone@bounce.test", subject="Hello", body="Hi")
    results = adapter.send([ok, bounce])
    assert results[0].accepted
    assert isinstance(results[1].error, ProviderPermanentError) and results[1].error.code == "550"
    (recorded,) = sandbox.requests
    assert recorded["subject"] == "Hello" and recorded["headers"]["List-Unsubscribe"] == "<https://hub.test/u/x/>"
    assert recorded["headers"]["From"] == "Brand <news@brand.test>"


def test_telegram_html_button_and_blocked_bot(sandbox):
    sandbox.configure(blocked_chat_above=1_000_000)
    adapter = get_adapter(config("telegram", sandbox.url))
    ok = OutboundMessage(message_id="1", to="4242", body="<b>Hi</b>", button={"text": "Shop", "url": "https://s.test"})
    blocked = OutboundMessage(message_id="2", to="2000000", body="Hi")
    results = adapter.send([ok, blocked])
    assert results[0].accepted and results[0].provider_message_id
    assert isinstance(results[1].error, ProviderPermanentError) and results[1].error.code == "blocked"
    (recorded,) = sandbox.requests
    assert recorded["text"] == "<b>Hi</b>" and recorded["parse_mode"] == "HTML"
    assert recorded["reply_markup"] == {"inline_keyboard": [[{"text": "Shop", "url": "https://s.test"}]]}
    # A second batch in a new event loop works (one Bot per asyncio.run).
    assert adapter.send([ok])[0].accepted


def test_outgoing_webhook_is_signed(sandbox):
    adapter = get_adapter(config("webhook", sandbox.url))
    (result,) = adapter.send([OutboundMessage(message_id="9", to="", payload={"contact": {"id": 5}, "x": 1})])
    assert result.accepted
    (recorded,) = sandbox.requests
    assert json.loads(recorded["raw"]) == {"contact": {"id": 5}, "x": 1}
    assert verify("hook-secret", recorded["raw"].encode(), recorded["signature"])
    assert not verify("other-secret", recorded["raw"].encode(), recorded["signature"])


def test_credentials_checks_and_missing_configuration(sandbox):
    assert "Sandbox account" in get_adapter(config("twilio_sms", sandbox.url)).check_credentials()
    assert "sandbox_bot" in get_adapter(config("telegram", sandbox.url)).check_credentials()
    assert "SendGrid" in get_adapter(config("sendgrid", sandbox.url)).check_credentials()
    with pytest.raises(ProviderConfigurationError, match="auth_token"):
        get_adapter(config("twilio_sms", sandbox.url, credentials={"account_sid": "AC1"}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("GSM-7", 0)),
        ("a" * 160, ("GSM-7", 1)),
        ("a" * 161, ("GSM-7", 2)),
        ("€" * 80, ("GSM-7", 1)),  # extension characters count twice
        ("€" * 81, ("GSM-7", 2)),
        ("ü" * 160, ("GSM-7", 1)),
        ("é" * 70 + "ł", ("UCS-2", 2)),
        ("✓" * 70, ("UCS-2", 1)),
        ("😀" * 35, ("UCS-2", 1)),  # an emoji is two UTF-16 units
        ("😀" * 36, ("UCS-2", 2)),
    ],
)
def test_sms_segments(text, expected):
    assert sms_segments(text) == expected


def test_twilio_time_out_is_transient(sandbox):
    sandbox.configure(latency_ms=1500)
    adapter = get_adapter(config("twilio_sms", sandbox.url, timeout=0.2))
    (result,) = adapter.send([OutboundMessage(message_id="1", to="+14155550101", body="x")])
    assert isinstance(result.error, ProviderTransientError) and result.error.status is None


def test_twilio_after_a_time_out_the_next_message_gets_its_own_answer(sandbox):
    """The kept-alive connection of a timed-out request is dropped: its late answer (for another
    message) must never be read as the next message's answer."""
    adapter = get_adapter(config("twilio_sms", sandbox.url, timeout=0.3))
    (first,) = adapter.send([OutboundMessage(message_id="1", to="+14155550101", body="first")])
    assert first.accepted
    sandbox.configure(latency_ms=600)
    (late,) = adapter.send([OutboundMessage(message_id="2", to="+14155550102", body="late")])
    assert isinstance(late.error, ProviderTransientError) and late.error.status is None
    sandbox.configure(latency_ms=0)
    time.sleep(1.0)  # the late request completes on the sandbox meanwhile
    (next_one,) = adapter.send([OutboundMessage(message_id="3", to="+14155550103", body="next")])
    assert next_one.accepted
    by_to = {r["to"]: r for r in sandbox.requests}  # the sandbox drops the late one: its client left
    assert next_one.provider_message_id == by_to["+14155550103"]["id"] != first.provider_message_id
    assert by_to["+14155550103"]["form"]["Body"] == "next"


def test_whatsapp_session_text_and_a_messaging_service(sandbox):
    sender = {"messaging_service_sid": "MG" + "2" * 32}
    adapter = get_adapter(config("twilio_whatsapp", sandbox.url, sender=sender))
    (result,) = adapter.send([OutboundMessage(message_id="s", to="+14155550112", body="Thanks for your reply")])
    assert result.accepted
    (recorded,) = sandbox.requests
    assert recorded["form"] == {
        "To": "whatsapp:+14155550112", "MessagingServiceSid": sender["messaging_service_sid"],
        "Body": "Thanks for your reply",
    }  # fmt: skip


def test_twilio_keeps_requests_when_a_proxy_is_configured(sandbox, monkeypatch):
    """With a proxy in the environment the direct http.client path steps aside; a dead proxy is transient."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    adapter = get_adapter(config("twilio_sms", sandbox.url, timeout=2))
    (result,) = adapter.send([OutboundMessage(message_id="1", to="+14155550101", body="x")])
    assert adapter._client()[1].pool is None
    assert isinstance(result.error, ProviderTransientError) and result.error.status is None
    assert sandbox.requests == []


def test_sendgrid_5xx_is_transient_for_the_whole_request(sandbox):
    sandbox.configure(rate_5xx=1.0)
    results = get_adapter(config("sendgrid", sandbox.url)).send(
        [OutboundMessage(message_id=str(i), to=f"{i}@x.test", subject="s", body="b") for i in range(2)]
    )
    assert all(isinstance(r.error, ProviderTransientError) and r.error.status == 503 for r in results)


def test_sendgrid_keeps_each_messages_sender_name_and_sends_large_bodies_alone(sandbox):
    adapter = get_adapter(config("sendgrid", sandbox.url))
    big = "x" * 12_000
    results = adapter.send([
        OutboundMessage(message_id="a", to="a@x.test", subject="s", body="b", from_name="Shop A"),
        OutboundMessage(message_id="b", to="b@x.test", subject="s", body="b", from_name="Shop B"),
        OutboundMessage(message_id="c", to="c@x.test", subject="s", body=big, from_name="Shop A"),
        OutboundMessage(message_id="d", to="d@x.test", subject="s", body="b"),
    ])  # fmt: skip
    assert [r.message_id for r in results] == ["a", "b", "c", "d"] and all(r.accepted for r in results)
    recorded = {r["to"]: r for r in sandbox.requests}
    assert recorded["c@x.test"]["content"]["text/plain"] == big
    assert recorded["b@x.test"]["sender"] == {"email": "news@brand.test", "name": "Shop B"}
    assert recorded["d@x.test"]["sender"] == {"email": "news@brand.test", "name": "Brand"}
    requests_made = {r.provider_message_id.split(".")[0] for r in results}
    assert len(requests_made) == 4  # Shop A, Shop B, the account's default name, the large one
