"""SendGrid email through the ``sendgrid`` SDK: up to 1,000 personalizations per request.

Each recipient's own subject and bodies travel as substitutions (``-mh_subject-`` …) of one shared
content, so a batch of 1,000 different emails is one HTTP request. A message whose substitutions
would pass SendGrid's 10,000-byte limit per personalization goes in a request of its own. Our
message id rides in ``custom_args`` so events correlate; marketing mail carries List-Unsubscribe
and List-Unsubscribe-Post (RFC 8058 one-click) headers.
"""

import json
import urllib.error

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from ..exceptions import ProviderConfigurationError
from . import register
from .base import BaseAdapter, OutboundMessage, SendResult

MAX_PERSONALIZATIONS = 1000
MAX_SUBSTITUTION_BYTES = 10_000
SUBJECT, HTML, TEXT = "-mh_subject-", "-mh_html-", "-mh_text-"


class SendGridAdapter(BaseAdapter):
    provider = "sendgrid"
    channel = "email"
    max_batch_size = MAX_PERSONALIZATIONS

    def __init__(self, config):
        super().__init__(config)
        if not config.credentials.get("api_key"):
            raise ProviderConfigurationError("sendgrid: the account needs the credential 'api_key'.")
        if not config.sender.get("from_email"):
            raise ProviderConfigurationError("sendgrid: set the account's from email.")
        kwargs = {"host": config.base_url.rstrip("/")} if config.base_url else {}
        self.client = SendGridAPIClient(config.credentials["api_key"], **kwargs)
        self.client.client.timeout = config.timeout  # the SDK's default is no time-out at all

    def _personalization(self, message: OutboundMessage, shared: bool) -> dict:
        personalization = {"to": [{"email": message.to}], "custom_args": {"mh_message_id": message.message_id}}
        if message.headers:
            personalization["headers"] = dict(message.headers)
        if shared:
            personalization["substitutions"] = {SUBJECT: message.subject, HTML: message.html, TEXT: message.body}
        else:
            personalization["subject"] = message.subject
        return personalization

    def _payload(self, messages: list[OutboundMessage], shared: bool) -> dict:
        sender = {"email": self.config.sender["from_email"]}
        if messages[0].from_name or self.config.sender.get("from_name"):
            sender["name"] = messages[0].from_name or self.config.sender["from_name"]
        first = messages[0]
        text, html = (TEXT, HTML) if shared else (first.body, first.html)
        content = [{"type": "text/plain", "value": text or " "}]
        if html or shared:
            content.append({"type": "text/html", "value": html})
        payload = {
            "personalizations": [self._personalization(m, shared) for m in messages],
            "from": sender,
            "content": content,
        }
        if shared:
            payload["subject"] = SUBJECT
        return payload

    def _post(self, payload: dict, messages: list[OutboundMessage]) -> list[SendResult]:
        try:
            response = self.client.client.mail.send.post(request_body=payload)
        except http_errors.HTTPError as exc:
            headers = dict(exc.headers or {}) if getattr(exc, "headers", None) else {}
            retry_after = headers.get("Retry-After") or headers.get("retry-after")
            body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body)
            error = self.classify(
                _first_error(body) or exc.reason, status=exc.status_code, code=exc.status_code,
                retry_after=float(retry_after) if retry_after else None, response=body[:500],
            )  # fmt: skip
            return [SendResult(m.message_id, accepted=False, error=error) for m in messages]
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            error = self.classify(f"SendGrid unreachable: {exc}", status=None)
            return [SendResult(m.message_id, accepted=False, error=error) for m in messages]
        x_message_id = response.headers.get("X-Message-Id", "")
        return [
            SendResult(m.message_id, accepted=True, provider_message_id=f"{x_message_id}.{i}")
            for i, m in enumerate(messages)
        ]

    def send(self, batch: list[OutboundMessage]) -> list[SendResult]:
        results: dict[str, SendResult] = {}
        shared: dict[str, list[OutboundMessage]] = {}  # by sender name: one "from" per request
        alone = []
        for message in batch:
            size = len((message.subject + message.html + message.body).encode())
            if size > MAX_SUBSTITUTION_BYTES:
                alone.append(message)
            else:
                shared.setdefault(message.from_name, []).append(message)
        for group in shared.values():
            for start in range(0, len(group), MAX_PERSONALIZATIONS):
                chunk = group[start : start + MAX_PERSONALIZATIONS]
                results.update({r.message_id: r for r in self._post(self._payload(chunk, shared=True), chunk)})
        for message in alone:
            results.update({r.message_id: r for r in self._post(self._payload([message], shared=False), [message])})
        return [results[m.message_id] for m in batch]

    def check_credentials(self) -> str:
        try:
            response = self.client.client.user.account.get()
        except http_errors.HTTPError as exc:
            raise self.classify(f"SendGrid refused the API key ({exc.status_code})", status=exc.status_code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise self.classify(f"SendGrid unreachable: {exc}", status=None) from None
        return f"SendGrid account ({json.loads(response.body).get('type', 'ok')})"


def _first_error(body: str) -> str:
    try:
        return json.loads(body)["errors"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


register(SendGridAdapter)
