"""Telegram through ``python-telegram-bot`` (async): one event loop and one fresh Bot per batch.

Reusing a Bot across ``asyncio.run`` calls fails against keep-alive servers ("Event loop is
closed"), so each batch runs ``asyncio.run`` with its own Bot, sending concurrently within it.
"""

import asyncio
import warnings

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.request import HTTPXRequest

from ..exceptions import ProviderConfigurationError
from . import register
from .base import BaseAdapter, OutboundMessage, SendResult


class TelegramAdapter(BaseAdapter):
    provider = "telegram"
    channel = "telegram"
    max_batch_size = 100

    def __init__(self, config):
        super().__init__(config)
        if not config.credentials.get("bot_token"):
            raise ProviderConfigurationError("telegram: the account needs the credential 'bot_token'.")

    def _bot(self) -> Bot:
        base = (self.config.base_url or "https://api.telegram.org").rstrip("/")
        request = HTTPXRequest(
            connection_pool_size=max(self.config.concurrency, 1),
            read_timeout=self.config.timeout, connect_timeout=self.config.timeout,
        )  # fmt: skip
        return Bot(self.config.credentials["bot_token"], base_url=f"{base}/bot", request=request)

    def _error(self, exc: TelegramError):
        if isinstance(exc, RetryAfter):
            with warnings.catch_warnings():  # PTB 22 warns that the int becomes a timedelta one day
                warnings.simplefilter("ignore")
                retry = exc.retry_after
            retry = retry.total_seconds() if hasattr(retry, "total_seconds") else retry
            return self.classify(exc.message, status=429, code=429, retry_after=float(retry))
        if isinstance(exc, Forbidden):
            return self.classify(exc.message, status=403, code="blocked")
        if isinstance(exc, BadRequest):
            return self.classify(exc.message, status=400, code="bad_request")
        if isinstance(exc, TimedOut | NetworkError):
            return self.classify(exc.message, status=None, code="network")
        return self.classify(exc.message, status=None)

    async def _send_all(self, batch: list[OutboundMessage]) -> list[SendResult]:
        gate = asyncio.Semaphore(max(self.config.concurrency, 1))
        async with self._bot() as bot:

            async def one(message: OutboundMessage) -> SendResult:
                markup = None
                if message.button and message.button.get("url"):
                    button = InlineKeyboardButton(message.button.get("text") or "Open", url=message.button["url"])
                    markup = InlineKeyboardMarkup([[button]])
                async with gate:
                    try:
                        sent = await bot.send_message(
                            chat_id=message.to, text=message.body, parse_mode=ParseMode.HTML, reply_markup=markup
                        )
                    except TelegramError as exc:
                        return SendResult(message.message_id, accepted=False, error=self._error(exc))
                return SendResult(message.message_id, accepted=True, provider_message_id=str(sent.message_id))

            return list(await asyncio.gather(*(one(m) for m in batch)))

    def send(self, batch: list[OutboundMessage]) -> list[SendResult]:
        try:
            return _run(lambda: self._send_all(batch))
        except TelegramError as exc:  # getMe failed: the whole batch
            error = self._error(exc)
            return [SendResult(m.message_id, accepted=False, error=error) for m in batch]

    def check_credentials(self) -> str:
        async def me():
            async with self._bot() as bot:
                return bot.bot

        try:
            user = _run(me)
        except TelegramError as exc:
            raise self._error(exc) from None
        return f"Telegram bot @{user.username}"


def _run(make_coroutine):
    """``asyncio.run`` in this thread, or in a helper thread when this one already runs a loop
    (an async caller, or a test harness such as Playwright's sync API)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


register(TelegramAdapter)
