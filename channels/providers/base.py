"""The base adapter: owns batching, sessions, time-outs and error classification.

A provider module subclasses ``BaseAdapter`` and maps payloads only. ``send(batch)`` takes many
``OutboundMessage`` and returns one ``SendResult`` per message, in order; it never raises for a
single message's failure (that is the result's ``error``), only for a failure of the whole call.
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

from ..exceptions import ProviderError, ProviderPermanentError, ProviderTransientError, UnsupportedFeature


@dataclass(frozen=True)
class ProviderConfig:
    """What an adapter needs from a ChannelAccount: decrypted credentials and identity."""

    provider: str
    channel: str
    credentials: dict  # e.g. {"account_sid": ..., "auth_token": ...}, {"api_key": ...}, {"bot_token": ...}
    sender: dict = field(default_factory=dict)  # from_number / messaging_service_sid / from_email / from_name
    base_url: str | None = None  # sandbox or regional endpoint
    status_callback_url: str | None = None
    timeout: float = 10.0
    concurrency: int = 8
    account_id: int | None = None


@dataclass(frozen=True)
class OutboundMessage:
    message_id: str  # ours: correlates callbacks, idempotency
    to: str  # E.164 number, email, chat id or URL
    body: str = ""  # SMS / WhatsApp session text / Telegram HTML / email text part
    subject: str = ""
    html: str = ""
    from_name: str = ""
    headers: dict = field(default_factory=dict)  # e.g. List-Unsubscribe
    content_sid: str | None = None  # WhatsApp approved template
    content_variables: dict = field(default_factory=dict)
    button: dict | None = None  # Telegram: {"text": ..., "url": ...}
    payload: dict | None = None  # outgoing webhook JSON
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    message_id: str
    accepted: bool
    provider_message_id: str | None = None
    error: ProviderError | None = None
    segments: int = 1  # SMS segments, for cost


class BaseAdapter:
    provider: ClassVar[str] = ""
    channel: ClassVar[str] = ""
    max_batch_size: ClassVar[int] = 100

    def __init__(self, config: ProviderConfig):
        self.config = config
        self._pool: ThreadPoolExecutor | None = None

    def send(self, batch: list[OutboundMessage]) -> list[SendResult]:
        raise UnsupportedFeature(f"{self.provider} cannot send", provider=self.provider)

    # -- shared machinery for provider modules --------------------------------------------------------
    def classify(
        self, message: str, *, status: int | None, code=None, retry_after=None, response=None
    ) -> ProviderError:
        """429, 5xx, time-outs and network failures are transient; every other refusal is permanent."""
        code = None if code is None else str(code)
        if status is None or status == 429 or status >= 500 or status == 408:
            return ProviderTransientError(
                message, provider=self.provider, status=status, code=code, retry_after=retry_after, response=response
            )
        return ProviderPermanentError(message, provider=self.provider, status=status, code=code, response=response)

    def send_each(
        self, batch: list[OutboundMessage], send_one: Callable[[OutboundMessage], SendResult]
    ) -> list[SendResult]:
        """For providers that take one message per request: ``config.concurrency`` requests at a time."""
        if len(batch) == 1 or self.config.concurrency <= 1:
            return [self._guarded(send_one, message) for message in batch]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix=self.provider)
        return list(self._pool.map(lambda message: self._guarded(send_one, message), batch))

    def _guarded(self, send_one, message: OutboundMessage) -> SendResult:
        try:
            return send_one(message)
        except ProviderError as error:
            return SendResult(message.message_id, accepted=False, error=error)

    def check_credentials(self) -> str:
        """A one-line description of the account if the credentials work; raises ProviderError."""
        raise UnsupportedFeature(f"{self.provider} cannot check credentials", provider=self.provider)
