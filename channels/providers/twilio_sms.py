"""Twilio SMS through the ``twilio`` SDK (one request per message, sent concurrently).

The SDK has no base-URL setting: a ``TwilioHttpClient`` subclass swaps ``https://api.twilio.com``
for the account's base URL (a regional endpoint or the sandbox) and keeps the last response's
headers, because ``Retry-After`` is not on the SDK's exception.

A message is created with the SDK's own request path (``client.api.v2010.request`` → ``Client.request``:
its URL, headers, authentication and HTTP client) and its own error parsing (``Version.exception``),
with the form fields of ``client.messages.create``; of the answer only the sid and the segment count are read, so no
``MessageInstance`` (30-odd parsed fields and a context) is built per message.
"""

import base64
import http.client
import json
import ssl
import threading
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
from twilio.base import values
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from ..exceptions import ProviderConfigurationError
from ..sms import sms_segments
from . import register
from .base import BaseAdapter, OutboundMessage, SendResult

TWILIO_API = "https://api.twilio.com"
# The form fields of ``messages.create`` for the parameters we use, in the SDK's order.
FORM_FIELDS = (("to", "To"), ("status_callback", "StatusCallback"), ("content_variables", "ContentVariables"),
               ("from_", "From"), ("messaging_service_sid", "MessagingServiceSid"), ("body", "Body"),
               ("content_sid", "ContentSid"))  # fmt: skip
CREATE_HEADERS = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}


class _HttpClient(TwilioHttpClient):
    """The SDK's HTTP seam: swaps the base URL, keeps the last response's headers, logs nothing
    (the SDK's INFO lines carry phone numbers and message text).

    Without a proxy it sends over one kept-alive ``http.client`` connection per host (one client per
    adapter thread): ``requests`` 2.34 spends more CPU per call (environment look-ups, runtime
    protocol checks) than the SDK and the network together, and ``urllib3`` 2 writes the headers
    and the body in two system calls and parses its own headers again, twice the CPU of
    ``http.client``, which sends a request in one write. With a proxy configured it keeps ``requests``.
    """

    def __init__(self, base_url: str | None, timeout: float, pool_size: int = 8):
        self.base_url = (base_url or "").rstrip("/")
        settings = requests.Session().merge_environment_settings(self.base_url or TWILIO_API, {}, None, None, None)
        super().__init__(timeout=timeout, proxy=settings["proxies"])
        self.last_headers: dict = {}
        self.pool: dict | None = None  # (scheme, host, port) -> connection; None: through requests
        if not settings["proxies"]:
            self.pool = {}
            self._ca_file = settings["verify"] if isinstance(settings["verify"], str) else None
            self._tls: ssl.SSLContext | None = None

    def request(self, method, url, params=None, data=None, headers=None, auth=None, timeout=None,
                allow_redirects=False):  # fmt: skip
        if self.base_url and url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        if self.pool is None:
            response = super().request(method, url, params, data, headers, auth, timeout, allow_redirects)
        else:
            response = self._send(method, url, params, data, dict(headers or {}), auth, timeout or self.timeout)
        self.last_headers = dict(response.headers or {})
        return response

    def _connection(self, scheme: str, host: str, port: int | None, timeout: float) -> http.client.HTTPConnection:
        key = (scheme, host, port)
        connection = self.pool.get(key)
        if connection is None:
            if scheme == "https":
                if self._tls is None:
                    self._tls = ssl.create_default_context(cafile=self._ca_file)
                connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
            else:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            self.pool[key] = connection
        connection.timeout = timeout  # for a new socket; a kept-alive one gets it below
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection

    def _send(self, method, url, params, data, headers, auth, timeout) -> Response:
        if params:
            url += ("&" if "?" in url else "?") + urlencode(_present(params), doseq=True)
        body = None
        if data:
            if headers.get("Content-Type", "").endswith("json"):
                body = json.dumps(data).encode()
            else:
                body = urlencode(_present(data), doseq=True).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise requests.ConnectionError(f"cannot send to {url!r}")
        connection = self._connection(parts.scheme, parts.hostname, parts.port, timeout)
        try:
            connection.request(method.upper(), urlunsplit(("", "", parts.path, parts.query, "")), body, headers)
            raw = connection.getresponse()
            text = raw.read().decode("utf-8", errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            # Time-outs, refusals, a kept-alive connection the server closed: never retried here (a
            # POST may have arrived); the next request opens a new connection.
            connection.close()
            raise requests.ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        return Response(raw.status, text, dict(raw.getheaders()))

    def log_request(self, kwargs) -> None:
        pass

    def log_response(self, status_code, response) -> None:
        pass


def _present(values: dict) -> dict:
    """Drop unset parameters, as ``requests`` does for ``None``."""
    return {key: value for key, value in values.items() if value is not None}


def _retry_after(headers: dict) -> float | None:
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class TwilioSmsAdapter(BaseAdapter):
    provider = "twilio_sms"
    channel = "sms"
    max_batch_size = 100
    address_prefix = ""

    def __init__(self, config):
        super().__init__(config)
        for key in ("account_sid", "auth_token"):
            if not config.credentials.get(key):
                raise ProviderConfigurationError(f"{self.provider}: the account needs the credential {key!r}.")
        if not (config.sender.get("from_number") or config.sender.get("messaging_service_sid")):
            raise ProviderConfigurationError(f"{self.provider}: set a from number or a Messaging Service SID.")
        self._local = threading.local()

    def _client(self) -> tuple[Client, _HttpClient]:
        if not hasattr(self._local, "client"):
            http = _HttpClient(self.config.base_url, self.config.timeout, pool_size=max(self.config.concurrency, 1))
            credentials = self.config.credentials
            self._local.http = http
            self._local.client = Client(credentials["account_sid"], credentials["auth_token"], http_client=http)
        return self._local.client, self._local.http

    def params(self, message: OutboundMessage) -> dict:
        params = {"to": self.address_prefix + message.to, "body": message.body}
        if self.config.sender.get("messaging_service_sid"):
            params["messaging_service_sid"] = self.config.sender["messaging_service_sid"]
        else:
            params["from_"] = self.address_prefix + self.config.sender["from_number"]
        if self.config.status_callback_url:
            params["status_callback"] = f"{self.config.status_callback_url}?m={message.message_id}"
        return params

    def _create(self, client: Client, params: dict) -> dict:
        """``client.messages.create(**params)``, answering the JSON instead of a MessageInstance."""
        unknown = set(params) - {name for name, _ in FORM_FIELDS}
        if unknown:
            raise TypeError(f"unexpected message parameters {sorted(unknown)}")
        data = values.of({field: params.get(name, values.unset) for name, field in FORM_FIELDS})
        version = client.api.v2010  # its request() goes through client.request: the SDK's URL, headers, auth
        uri = f"/Accounts/{client.account_sid}/Messages.json"
        response = version.request("POST", uri, data=data, headers=dict(CREATE_HEADERS))
        if not 200 <= response.status_code < 300:
            raise version.exception("POST", uri, response, "Unable to create record")
        return json.loads(response.text) if response.text else {}

    def send_one(self, message: OutboundMessage) -> SendResult:
        client, http = self._client()
        try:
            created = self._create(client, self.params(message))
        except TwilioRestException as exc:
            raise self.classify(
                exc.msg, status=exc.status, code=exc.code, retry_after=_retry_after(http.last_headers)
            ) from None
        except TwilioException as exc:  # RFC 9457 service errors
            raise self.classify(str(exc), status=getattr(exc, "status", None)) from None
        except requests.RequestException as exc:  # the SDK lets network failures and time-outs through
            raise self.classify(f"Twilio unreachable: {exc}", status=None, code="network") from None
        segments = int(created.get("num_segments") or 0) or sms_segments(message.body)[1]
        return SendResult(message.message_id, accepted=True, provider_message_id=created.get("sid"), segments=segments)

    def send(self, batch: list[OutboundMessage]) -> list[SendResult]:
        return self.send_each(batch, self.send_one)

    def check_credentials(self) -> str:
        client, _ = self._client()
        try:
            account = client.api.v2010.accounts(self.config.credentials["account_sid"]).fetch()
        except TwilioRestException as exc:
            raise self.classify(exc.msg, status=exc.status, code=exc.code) from None
        except (TwilioException, requests.RequestException) as exc:
            raise self.classify(str(exc), status=None) from None
        return f"Twilio account {account.friendly_name or account.sid} ({account.status})"


register(TwilioSmsAdapter)
