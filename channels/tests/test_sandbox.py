"""The sandbox's own behaviour: signed callbacks the real SDKs' validators accept, control over HTTP."""

import json
from urllib.parse import parse_qsl

import requests
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from channels.exceptions import ProviderPermanentError, ProviderTransientError
from channels.providers import OutboundMessage, get_adapter
from channels.sandbox.__main__ import _from_environment

from .test_adapters import TWILIO, config


def test_twilio_status_callbacks_are_signed_with_the_accounts_auth_token(sandbox, receiver):
    sandbox.configure(callbacks=True, callback_delay_ms=0)
    adapter = get_adapter(config("twilio_sms", sandbox.url, status_callback_url=receiver.url + "/twilio/status"))
    results = adapter.send([
        OutboundMessage(message_id="ok", to="+14155550101", body="Hi"),
        OutboundMessage(message_id="gone", to="+14155559999", body="Hi"),
    ])  # fmt: skip
    callbacks = receiver.wait_for(4)
    validator = RequestValidator(TWILIO["auth_token"])
    statuses = {}
    for callback in callbacks:
        params = dict(parse_qsl(callback["body"].decode()))
        url = receiver.url + callback["path"]
        assert validator.validate(url, params, callback["headers"]["X-Twilio-Signature"])
        assert not RequestValidator("another-token").validate(url, params, callback["headers"]["X-Twilio-Signature"])
        statuses.setdefault(params["MessageSid"], []).append((params["MessageStatus"], params.get("ErrorCode")))
    assert sorted(statuses[results[0].provider_message_id]) == [("delivered", None), ("sent", None)]
    assert sorted(statuses[results[1].provider_message_id]) == [("sent", None), ("undelivered", "30006")]
    assert {c["path"] for c in callbacks} == {"/twilio/status?m=ok", "/twilio/status?m=gone"}


def test_twilio_account_tokens_are_enforced_when_configured(sandbox):
    sandbox.configure(twilio_auth_tokens={TWILIO["account_sid"]: "the-real-token"})
    (result,) = get_adapter(config("twilio_sms", sandbox.url)).send(
        [OutboundMessage(message_id="1", to="+14155550101", body="x")]
    )
    assert isinstance(result.error, ProviderPermanentError) and result.error.code == "20003"


def test_sendgrid_events_are_ecdsa_signed_with_bounces_opens_and_clicks(sandbox, receiver):
    sandbox.configure(callbacks=True, callback_delay_ms=0, sendgrid_events_url=receiver.url + "/sg", open_rate=1.0,
                      click_rate=1.0)  # fmt: skip
    adapter = get_adapter(config("sendgrid", sandbox.url))
    results = adapter.send([
        OutboundMessage(message_id="m1", to="ann@example.test", subject="s", body="b"),
        OutboundMessage(message_id="m2", to="gone@bounce.test", subject="s", body="b"),
    ])  # fmt: skip
    assert all(r.accepted for r in results)  # a bounce is accepted first, then reported
    (callback,) = receiver.wait_for(1)
    public_key = requests.get(sandbox.url + "/_sandbox/sendgrid-public-key", timeout=5).text
    verifier = EventWebhook(public_key)
    headers, payload = callback["headers"], callback["body"].decode()
    signature = headers["X-Twilio-Email-Event-Webhook-Signature"]
    timestamp = headers["X-Twilio-Email-Event-Webhook-Timestamp"]
    assert verifier.verify_signature(payload, signature, timestamp)
    assert not verifier.verify_signature(payload.replace("bounce", "delivered"), signature, timestamp)
    events = {(e["mh_message_id"], e["event"]): e for e in json.loads(payload)}
    assert set(events) == {("m1", "delivered"), ("m1", "open"), ("m1", "click"), ("m2", "bounce")}
    assert events[("m2", "bounce")]["sg_message_id"] == results[1].provider_message_id
    assert events[("m1", "click")]["url"]


def test_unreachable_provider_is_transient_for_every_adapter(sandbox):
    from channels.sandbox import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    message = {"message_id": "1", "to": "+14155550101", "body": "x", "subject": "s"}
    for provider, to in [("twilio_sms", "+14155550101"), ("sendgrid", "a@x.test"), ("telegram", "42"),
                         ("webhook", "")]:  # fmt: skip
        adapter = get_adapter(config(provider, dead, timeout=2))
        (result,) = adapter.send([OutboundMessage(**{**message, "to": to})])
        assert isinstance(result.error, ProviderTransientError), provider
        assert result.error.status is None, provider


def test_telegram_429_carries_retry_after(sandbox):
    sandbox.configure(rate_429=1.0, retry_after=5)
    (result,) = get_adapter(config("telegram", sandbox.url)).send([OutboundMessage(message_id="1", to="7", body="x")])
    assert isinstance(result.error, ProviderTransientError) and result.error.retry_after == 5.0


def test_webhook_5xx_is_transient_and_4xx_permanent(sandbox):
    adapter = get_adapter(config("webhook", sandbox.url))
    sandbox.configure(rate_5xx=1.0)
    (result,) = adapter.send([OutboundMessage(message_id="1", to="", payload={"a": 1})])
    assert isinstance(result.error, ProviderTransientError) and result.error.status == 503
    sandbox.configure(rate_5xx=0.0)
    adapter = get_adapter(config("webhook", sandbox.url, credentials={"url": sandbox.url + "/nowhere", "secret": "s"}))
    (result,) = adapter.send([OutboundMessage(message_id="1", to="", payload={"a": 1})])
    assert isinstance(result.error, ProviderPermanentError) and result.error.status == 404


def test_control_endpoints_configure_count_filter_and_reset(sandbox):
    url = sandbox.url + "/_sandbox"
    assert requests.post(url + "/config", json={"blocked_chat_above": 99}, timeout=5).json()["blocked_chat_above"] == 99
    refused = requests.post(url + "/config", json={"nonsense": 1}, timeout=5)
    assert refused.status_code == 400 and "nonsense" in refused.json()["error"]
    adapter = get_adapter(config("telegram", sandbox.url))
    results = adapter.send(
        [OutboundMessage(message_id=str(i), to=to, body="x") for i, to in enumerate(["5", "5", "6", "100"])]
    )
    assert [r.accepted for r in results] == [True, True, True, False]
    counts = requests.get(url + "/counts", timeout=5).json()
    assert counts["total"] == 3 and counts["addresses"] == 2 and counts["duplicates"] == {"5": 2}
    assert requests.get(url + "/requests", params={"to": "6"}, timeout=5).json()["count"] == 1
    requests.post(url + "/reset", timeout=5)
    assert requests.get(url + "/counts", timeout=5).json()["total"] == 0


def test_settings_from_the_environment_are_typed():
    environ = {"SANDBOX_LATENCY_MS": "25", "SANDBOX_CALLBACKS": "false", "SANDBOX_RETRY_AFTER": "3",
               "SANDBOX_TWILIO_AUTH_TOKENS": '{"AC1": "t"}', "OTHER": "x"}  # fmt: skip
    assert _from_environment(environ) == {
        "latency_ms": 25.0, "callbacks": False, "retry_after": 3, "twilio_auth_tokens": {"AC1": "t"},
    }  # fmt: skip


def test_the_signing_key_survives_a_restart_when_kept_in_a_file(tmp_path):
    from channels.sandbox import Config, Sandbox

    path = str(tmp_path / "sendgrid.pem")
    first = Sandbox(Config(private_key_file=path)).public_key()
    assert Sandbox(Config(private_key_file=path)).public_key() == first
    assert Sandbox(Config()).public_key() != first
