"""Outgoing webhook: POST the message as JSON to the brand's URL, signed with HMAC-SHA256.

The signature header is ``X-Hub-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">``
with the account's secret: the receiver recomputes it and refuses stale timestamps.
"""

import hashlib
import hmac
import json
import time

import requests

from ..exceptions import ProviderConfigurationError
from . import register
from .base import BaseAdapter, OutboundMessage, SendResult


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, tolerance: int = 300, now: float | None = None) -> bool:
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


class WebhookAdapter(BaseAdapter):
    provider = "webhook"
    channel = "webhook"
    max_batch_size = 100

    def __init__(self, config):
        super().__init__(config)
        for key in ("url", "secret"):
            if not config.credentials.get(key):
                raise ProviderConfigurationError(f"webhook: the account needs the credential {key!r}.")
        self.session = requests.Session()

    def send_one(self, message: OutboundMessage) -> SendResult:
        body = json.dumps(message.payload or {"message_id": message.message_id, "text": message.body}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature": sign(self.config.credentials["secret"], body),
            "X-Hub-Message-Id": message.message_id,
        }
        try:
            response = self.session.post(self.config.credentials["url"], data=body, headers=headers,
                                         timeout=self.config.timeout)  # fmt: skip
        except requests.RequestException as exc:
            raise self.classify(f"webhook unreachable: {exc}", status=None) from None
        if response.status_code >= 300:
            retry_after = response.headers.get("Retry-After")
            raise self.classify(
                f"webhook answered {response.status_code}", status=response.status_code, code=response.status_code,
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )  # fmt: skip
        return SendResult(message.message_id, accepted=True, provider_message_id=message.message_id)

    def send(self, batch: list[OutboundMessage]) -> list[SendResult]:
        return self.send_each(batch, self.send_one)


register(WebhookAdapter)
