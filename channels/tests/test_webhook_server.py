"""The fast path (aiohttp, group commit) over real HTTP against real PostgreSQL: a request is answered 200
only once its batch is committed; forged, stale and unknown ones leave only the log; a failed commit
answers 500 and stores nothing of the request."""

import asyncio
import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.exceptions import TooManyFieldsSent
from django.http import QueryDict
from twilio.request_validator import RequestValidator

from audiences.models import Consent, Contact, Suppression
from campaigns.models import Message
from campaigns.tests.factories import account
from channels.models import ChannelAccount, ProviderEvent, WebhookLog
from channels.webhook_server import _fields, running
from channels.webhooks import Rejected, rejection_count

pytestmark = pytest.mark.django_db(transaction=True)  # the server's threads have their own connections
TOKEN = "token-test"  # the factory's Twilio auth token


@pytest.fixture
def serve(settings):
    """Start the fast path with the given options; the public base URL is the server's own."""
    with_servers = []

    def start(**options):
        server = running(**options)
        url = server.__enter__()
        with_servers.append(server)
        settings.PUBLIC_BASE_URL = url
        return url

    yield start
    for server in reversed(with_servers):
        server.__exit__(None, None, None)


def twilio(url: str, path: str, params: dict, token: str = TOKEN) -> tuple[str, bytes, dict]:
    headers = {"X-Twilio-Signature": RequestValidator(token).compute_signature(url + path, params),
               "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    return url + path, urlencode(params).encode(), headers


def post_all(requests: list[tuple[str, bytes, dict]]) -> list[int]:
    """Send the requests at once (one batch when the server waits for as many) and return their statuses."""

    async def go():
        async with aiohttp.ClientSession() as session:

            async def one(url, body, headers):
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    return response.status

            return await asyncio.gather(*(one(*request) for request in requests))

    with ThreadPoolExecutor(1) as client:  # pytest's thread may have a loop running (Playwright's sync API)
        return list(client.submit(asyncio.run, go()).result())


@pytest.fixture
def sms(brand_a):
    return account(brand_a, "sms")


def sent_messages(brand, sms, count: int) -> list[Message]:
    contacts = [Contact.objects.create(brand=brand, phone=f"+1415555{i:04d}") for i in range(count)]
    return [Message.objects.create(brand=brand, contact=c, channel="sms", account=sms, status="sent",
                                   address=c.phone, provider_message_id=f"SM{i}") for i, c in enumerate(contacts)]  # fmt: skip


def status_callback(url, sms, message, status="delivered", token=TOKEN):
    params = {"MessageSid": message.provider_message_id, "MessageStatus": status, "To": message.address}
    return twilio(url, f"/webhooks/twilio/{sms.pk}/status/?m={message.pk}", params, token)


def test_a_batch_of_callbacks_is_stored_once_and_moves_the_messages(serve, brand_a, sms):
    url = serve(linger=5, max_batch=11)  # the eleven requests below are one batch
    messages = sent_messages(brand_a, sms, 10)
    requests = [status_callback(url, sms, m) for m in messages]
    assert post_all([*requests, requests[0]]) == [200] * 11  # the first one twice in the same batch
    assert sorted(Message.objects.values_list("status", flat=True)) == ["delivered"] * 10
    assert ProviderEvent.objects.count() == 10
    verdicts = sorted(WebhookLog.objects.values_list("verdict", flat=True))
    assert verdicts == ["accepted"] * 10 + ["duplicate"]
    assert set(WebhookLog.objects.values_list("events", flat=True)) == {0, 1}
    assert post_all([status_callback(url, sms, messages[3], "sent")]) == [200]  # a late "sent": no step back
    assert Message.objects.get(pk=messages[3].pk).status == "delivered"


def test_a_retried_callback_is_acted_on_once(serve, brand_a, sms):
    url = serve(linger=0.005, max_batch=500)
    (message,) = sent_messages(brand_a, sms, 1)
    callback = status_callback(url, sms, message)
    assert post_all([callback]) == [200]
    assert post_all([callback, callback]) == [200, 200]  # Twilio retries: stored, acted on and logged as before
    assert ProviderEvent.objects.count() == 1
    assert sorted(WebhookLog.objects.values_list("verdict", flat=True)) == ["accepted", "duplicate", "duplicate"]
    assert Message.objects.get(pk=message.pk).status == "delivered"


def test_forged_stale_malformed_and_unknown_requests_leave_only_the_log(serve, brand_a, sms):
    url = serve(linger=0.005, max_batch=500)
    (message,) = sent_messages(brand_a, sms, 1)
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    email = account(brand_a, "email")
    email.set_credentials({**email.credentials, "webhook_public_key": base64.b64encode(public).decode()})
    email.save()
    body = json.dumps([{"event": "delivered", "email": "a@b.test", "sg_event_id": "e1", "timestamp": 1}]).encode()
    old = str(int(time.time()) - 3600)
    stale = (f"{url}/webhooks/sendgrid/{email.pk}/events/", body, {
        "Content-Type": "application/json", "X-Twilio-Email-Event-Webhook-Timestamp": old,
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(
            private.sign(old.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()})  # fmt: skip
    forged = status_callback(url, sms, message, token="wrong-token")
    unsigned = (forged[0], forged[1], {"Content-Type": "application/x-www-form-urlencoded"})
    malformed = twilio(url, f"/webhooks/twilio/{sms.pk}/status/", {"MessageSid": "SM0", "MessageStatus": "exploded"})
    unknown = twilio(url, f"/webhooks/twilio/{sms.pk + 999}/status/", {"MessageSid": "SM0", "MessageStatus": "sent"})
    not_twilio = twilio(url, f"/webhooks/twilio/{email.pk}/status/", {"MessageSid": "SM0", "MessageStatus": "sent"})
    assert post_all([forged, unsigned, stale, malformed, unknown, not_twilio]) == [403, 403, 403, 400, 404, 404]
    assert Message.objects.get(pk=message.pk).status == "sent"
    assert not ProviderEvent.objects.exists()
    assert rejection_count("twilio", "forged") == 2 and rejection_count("sendgrid", "stale") == 1
    verdicts = sorted(WebhookLog.objects.values_list("verdict", flat=True))
    assert verdicts == ["forged", "forged", "malformed", "stale", "unknown_account", "unknown_account"]
    logged = WebhookLog.objects.get(verdict="malformed")
    assert (logged.path, logged.headers["X-Twilio-Signature"]) == (f"/webhooks/twilio/{sms.pk}/status/", malformed[2]
                                                                   ["X-Twilio-Signature"])  # fmt: skip


def test_a_failed_commit_answers_500_and_stores_nothing_of_its_requests(serve, brand_a, brand_b, sms):
    """The account of two requests is deleted after they were verified: their events cannot be stored
    (the foreign key fails at COMMIT). The batch's third request, for a living account, is stored."""
    url = serve(linger=5, max_batch=3, account_ttl=3600)
    (message,) = sent_messages(brand_a, sms, 1)
    gone = account(brand_b, "sms")
    other = Message(pk=message.pk, provider_message_id="SMx", address="+14155550999")
    assert post_all([status_callback(url, gone, other, token="warm-the-cache")] * 3) == [403] * 3
    ChannelAccount.objects.filter(pk=gone.pk).delete()
    requests = [status_callback(url, gone, other), status_callback(url, gone, other, "sent"),
                status_callback(url, sms, message)]  # fmt: skip
    assert post_all(requests) == [500, 500, 200]
    assert list(ProviderEvent.objects.values_list("account_id", "provider_event_id")) == [(sms.pk, "SM0:delivered")]
    assert Message.objects.get(pk=message.pk).status == "delivered"
    verdicts = sorted(WebhookLog.objects.values_list("verdict", "account_id"))
    assert verdicts == [("accepted", sms.pk), ("forged", None), ("forged", None), ("forged", None)]


def test_stop_on_an_inbound_message_unsubscribes_before_the_answer(serve, brand_a, sms):
    url = serve(linger=0.005, max_batch=500)
    contact = Contact.objects.create(brand=brand_a, phone="+14155550123")
    Consent.objects.create(
        contact=contact, channel="sms", status="subscribed", source="t", updated_at="2026-01-01T00:00Z"
    )
    stop = {"MessageSid": "SMa", "From": "+14155550123", "To": "+14155550000", "Body": " stop "}
    assert post_all([twilio(url, f"/webhooks/twilio/{sms.pk}/inbound/", stop)]) == [200]
    assert Consent.objects.get(contact=contact).status == "unsubscribed"
    assert Suppression.objects.filter(address="+14155550123", reason="stop").exists()


def test_a_rotated_token_is_accepted_at_once_and_the_old_one_refused(serve, brand_a, sms):
    """A failed verification re-reads the account (here at once), so the new token works immediately;
    with no cache lifetime the old token is refused from the next request on."""
    messages = sent_messages(brand_a, sms, 3)
    cached = serve(linger=0.005, max_batch=500, account_ttl=3600, reread_after=0)
    assert post_all([status_callback(cached, sms, messages[0])]) == [200]
    sms.set_credentials({**sms.credentials, "auth_token": "rotated"})
    sms.save()
    assert post_all([status_callback(cached, sms, messages[1], token="rotated")]) == [200]
    uncached = serve(linger=0.005, max_batch=500, account_ttl=0)
    assert post_all([status_callback(uncached, sms, messages[2], token=TOKEN)]) == [403]
    assert post_all([status_callback(uncached, sms, messages[2], token="rotated")]) == [200]
    statuses = list(Message.objects.order_by("pk").values_list("status", flat=True))
    assert statuses == ["delivered", "delivered", "delivered"]


@pytest.mark.parametrize(
    "text",
    ["", "q=a+b", "a=1&&b", "a", "=x&a=", "a=1&a=2;b=3", "x=%2B+y%zz&x=%C3%A9&x=1&x=%C3%A9", "Body=Gr%C3%BC%C3%9Fe+%26+more%3D",
     "To=whatsapp%3A%2B4915112345678&MessageSid=SM1&MessageStatus=delivered&%61=b"],
)  # fmt: skip
def test_the_fast_path_reads_form_fields_as_django_does(text):
    form, django = _fields(text), QueryDict(text)
    assert dict(form.items()) == dict(django.items())  # the last value of a repeated field
    assert form.lists == dict(django.lists())
    assert [form.getlist(k) for k in [*django, "missing"]] == [django.getlist(k) for k in [*django, "missing"]]
    assert [form.get(k) for k in [*django, "missing"]] == [django.get(k) for k in [*django, "missing"]]
    validator = RequestValidator(TOKEN)  # Twilio signs every value of each field
    assert validator.compute_signature("https://hub.test/x", form) == validator.compute_signature(
        "https://hub.test/x", django
    )


def test_the_fast_path_refuses_too_many_fields_as_django_does(settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 3
    assert len(_fields("a=1&b=2&c=3")) == len(QueryDict("a=1&b=2&c=3")) == 3
    with pytest.raises(Rejected):
        _fields("a=1&b=2&&c=3")
    with pytest.raises(TooManyFieldsSent):
        QueryDict("a=1&b=2&&c=3")
