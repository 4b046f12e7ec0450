"""The provider sandbox: Twilio Messages, SendGrid v3 mail/send, Telegram Bot API and SMTP, offline.

The real SDKs, pointed at this server, work unchanged. Behaviour is configuration (``Config``):
latency, a share of 429 (with Retry-After) and 5xx answers, permanent failures by address rule
(numbers ending 0000 are invalid, ``*@bounce.test`` bounces, chat ids above a bound have blocked
the bot), and correctly signed status callbacks / events posted back to the hub after a delay.
Every request is recorded; ``/_sandbox/requests``, ``/_sandbox/counts``, ``/_sandbox/config`` and
``/_sandbox/reset`` let tests and benchmarks see exactly what each address received.
"""

import asyncio
import base64
import contextlib
import dataclasses
import email
import hashlib
import hmac
import itertools
import json
import logging
import random
import re
import time
import uuid
from collections import Counter, defaultdict
from urllib.parse import parse_qsl

from aiohttp import ClientSession, ClientTimeout, web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger("sandbox")


@dataclasses.dataclass
class Config:
    latency_ms: float = 0.0
    rate_429: float = 0.0  # share of requests answered 429
    rate_5xx: float = 0.0  # share answered 503
    retry_after: int = 1
    invalid_suffix: str = "0000"  # phone numbers ending with this are invalid (Twilio 21211)
    bounce_domain: str = "bounce.test"  # emails here are accepted, then bounce
    blocked_chat_above: int = 10**12  # Telegram chat ids above this have blocked the bot
    callbacks: bool = True
    callback_delay_ms: float = 200.0
    callback_concurrency: int = 32  # callbacks in flight at once; the others queue in the sandbox
    undelivered_suffix: str = "9999"  # numbers ending with this: sent, then undelivered (30006)
    open_rate: float = 0.0  # share of delivered emails that get an open event
    click_rate: float = 0.0  # share that also get a click event
    sendgrid_events_url: str = ""  # where SendGrid events go (the hub's webhook URL for the account)
    twilio_auth_tokens: dict = dataclasses.field(default_factory=dict)  # sid -> token; default: basic auth's
    record_bodies: bool = True
    private_key_file: str = ""  # PEM of the SendGrid signing key: kept across restarts (made if missing)


class Sandbox:
    def __init__(self, config: Config | None = None):
        self.config = config or Config()
        self.requests: list[dict] = []
        self.counts: Counter = Counter()
        self.callbacks_sent = 0
        self.callback_failures = 0
        self.sunk = 0
        self._event_ids = itertools.count()
        self._event_prefix = uuid.uuid4().hex[:12]
        self._key = _signing_key(self.config.private_key_file)
        self._pending: set[asyncio.Task] = set()
        self._session: ClientSession | None = None
        self._callback_queue: dict[str, list] = defaultdict(list)
        self._callback_slots: asyncio.Semaphore | None = None

    # -- bookkeeping -------------------------------------------------------------------------------
    def public_key(self) -> str:
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def record(self, provider: str, to: str, **data) -> str:
        message_id = data.pop("id", None) or uuid.uuid4().hex
        self.counts[to] += 1
        entry = {"provider": provider, "to": to, "id": message_id, "at": time.time()}
        if self.config.record_bodies:
            entry.update(data)
        self.requests.append(entry)
        return message_id

    async def _chaos(self):
        """Latency and injected failures: returns an error response or None."""
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        roll = random.random()
        if roll < self.config.rate_429:
            return 429
        if roll < self.config.rate_429 + self.config.rate_5xx:
            return 503
        return None

    def _later(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, url: str, **kwargs) -> None:
        # At most ``callback_concurrency`` callbacks in flight, the rest wait their turn: a provider
        # delivers callbacks at its own pace. Without the bound every queued callback shared one
        # 10-second budget that included waiting for a connection, so a hub slower than the send
        # rate lost callbacks by the thousand (time-outs), which left messages 'sent' or 'unknown'.
        if self._callback_slots is None:
            self._callback_slots = asyncio.Semaphore(max(1, self.config.callback_concurrency))
        async with self._callback_slots:
            await self._post_now(url, **kwargs)

    async def _post_now(self, url: str, **kwargs) -> None:
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=10))
        try:
            async with self._session.post(url, **kwargs) as response:
                await response.read()
                if response.status >= 300:
                    self.callback_failures += 1
                    log.warning("callback to %s answered %s", url, response.status)
                else:
                    self.callbacks_sent += 1
        except Exception as exc:  # noqa: BLE001 - the hub being down must not stop the sandbox
            self.callback_failures += 1
            log.warning("callback to %s failed: %s", url, exc)

    # -- Twilio ------------------------------------------------------------------------------------
    async def twilio_messages(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        token = _basic_auth_password(request)
        expected = self.config.twilio_auth_tokens.get(sid)
        if token is None or (expected and token != expected):
            return _twilio_error(401, 20003, "Authenticate")
        chaos = await self._chaos()
        if chaos == 429:
            return _twilio_error(429, 20429, "Too Many Requests", {"Retry-After": str(self.config.retry_after)})
        if chaos:
            return _twilio_error(503, 20500, "Service unavailable")
        form = dict(await request.post())
        to = form.get("To", "")
        number = to.removeprefix("whatsapp:")
        if not re.fullmatch(r"\+[1-9]\d{6,14}", number) or number.endswith(self.config.invalid_suffix):
            return _twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not (form.get("Body") or form.get("ContentSid")):
            return _twilio_error(400, 21602, "Message body is required.")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return _twilio_error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
        message_sid = "SM" + uuid.uuid4().hex
        body = form.get("Body", "")
        segments = _segments(body)
        self.record("twilio", to, id=message_sid, body=body, form=form, account_sid=sid)
        callback = form.get("StatusCallback")
        if callback and self.config.callbacks:
            final = "undelivered" if number.endswith(self.config.undelivered_suffix) else "delivered"
            secret = self.config.twilio_auth_tokens.get(sid, token)
            self._later(self._twilio_callbacks(callback, secret, sid, message_sid, form, final))
        now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        payload = {
            "sid": message_sid, "account_sid": sid, "to": to, "from": form.get("From"), "body": body,
            "status": "queued", "num_segments": str(segments), "num_media": "0", "direction": "outbound-api",
            "api_version": "2010-04-01", "price": None, "price_unit": "USD", "error_code": None,
            "error_message": None, "date_created": now, "date_updated": now, "date_sent": None,
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "uri": f"/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json", "subresource_uris": {},
        }  # fmt: skip
        return web.json_response(payload, status=201)

    async def twilio_account(self, request: web.Request) -> web.Response:
        if _basic_auth_password(request) is None:
            return _twilio_error(401, 20003, "Authenticate")
        sid = request.match_info["sid"]
        expected = self.config.twilio_auth_tokens.get(sid)
        if expected and _basic_auth_password(request) != expected:
            return _twilio_error(401, 20003, "Authenticate")
        return web.json_response({"sid": sid, "friendly_name": "Sandbox account", "status": "active", "type": "Full",
                                  "subresource_uris": {}, "uri": f"/2010-04-01/Accounts/{sid}.json"})  # fmt: skip

    async def _twilio_callbacks(self, url, token, sid, message_sid, form, final) -> None:
        await asyncio.sleep(self.config.callback_delay_ms / 1000)
        for status in ("sent", final):
            params = {
                "MessageSid": message_sid, "SmsSid": message_sid, "AccountSid": sid, "MessageStatus": status,
                "SmsStatus": status, "To": form.get("To", ""), "From": form.get("From", ""), "ApiVersion": "2010-04-01",
            }  # fmt: skip
            if status == "undelivered":
                params["ErrorCode"] = "30006"
            await self._post(url, data=params, headers={"X-Twilio-Signature": twilio_signature(token, url, params)})

    # -- SendGrid ----------------------------------------------------------------------------------
    async def sendgrid_send(self, request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return web.json_response({"errors": [{"message": "authorization required"}]}, status=401)
        chaos = await self._chaos()
        if chaos == 429:
            return web.json_response(
                {"errors": [{"message": "too many requests"}]}, status=429,
                headers={"Retry-After": str(self.config.retry_after), "X-RateLimit-Remaining": "0"},
            )  # fmt: skip
        if chaos:
            return web.json_response({"errors": [{"message": "service unavailable"}]}, status=503)
        try:
            payload = await request.json()
        except ValueError:
            return web.json_response({"errors": [{"message": "Bad Request", "field": None}]}, status=400)
        personalizations = payload.get("personalizations") or []
        if not 1 <= len(personalizations) <= 1000:
            return web.json_response(
                {"errors": [{"message": "personalizations must have 1 to 1000 items", "field": "personalizations"}]},
                status=400,
            )
        if not payload.get("from", {}).get("email"):
            return web.json_response({"errors": [{"message": "from email required", "field": "from.email"}]}, 400)
        x_message_id = uuid.uuid4().hex[:22]
        events = []
        for index, personalization in enumerate(personalizations):
            subs = personalization.get("substitutions") or {}
            subject = _substitute(personalization.get("subject") or payload.get("subject", ""), subs)
            content = {c["type"]: _substitute(c["value"], subs) for c in payload.get("content", [])}
            custom = {**payload.get("custom_args", {}), **personalization.get("custom_args", {})}
            for recipient in personalization.get("to", []):
                address = recipient["email"].lower()
                sg_id = f"{x_message_id}.{index}"
                self.record(
                    "sendgrid", address, id=sg_id, subject=subject, content=content, custom_args=custom,
                    sender=payload.get("from"),
                    headers={**payload.get("headers", {}), **personalization.get("headers", {})},
                )  # fmt: skip
                events.append((address, sg_id, custom))
        if self.config.callbacks and self.config.sendgrid_events_url and events:
            self._later(self._sendgrid_events(events))
        return web.Response(status=202, headers={"X-Message-Id": x_message_id})

    async def _sendgrid_events(self, sent: list) -> None:
        await asyncio.sleep(self.config.callback_delay_ms / 1000)
        now = int(time.time())
        events = []
        for address, sg_id, custom in sent:
            base = {"email": address, "timestamp": now, "sg_message_id": sg_id, **custom}
            if address.endswith("@" + self.config.bounce_domain):
                events.append({**base, "event": "bounce", "type": "bounce", "status": "5.1.1",
                               "reason": "550 5.1.1 user unknown", "sg_event_id": self._event_id()})  # fmt: skip
                continue
            events.append({**base, "event": "delivered", "sg_event_id": self._event_id()})
            if random.random() < self.config.open_rate:
                events.append({**base, "event": "open", "sg_event_id": self._event_id()})
                if random.random() < self.config.click_rate / max(self.config.open_rate, 1e-9):
                    events.append({**base, "event": "click", "url": "https://example.test/offer",
                                   "sg_event_id": self._event_id()})  # fmt: skip
        for start in range(0, len(events), 1000):
            body = json.dumps(events[start : start + 1000]).encode()
            timestamp = str(int(time.time()))
            signature = self._key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
            headers = {
                "Content-Type": "application/json",
                "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            }
            await self._post(self.config.sendgrid_events_url, data=body, headers=headers)

    def _event_id(self) -> str:
        """Unique per sandbox run, and cheap: uuid4 was half the cost of an event."""
        return f"{self._event_prefix}{next(self._event_ids):x}"

    async def sendgrid_account(self, request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer SG."):
            return web.json_response({"errors": [{"message": "authorization required"}]}, status=401)
        return web.json_response({"type": "paid", "reputation": 100})

    # -- Telegram ----------------------------------------------------------------------------------
    async def telegram(self, request: web.Request) -> web.Response:
        token, method = request.match_info["token"], request.match_info["method"]
        if request.content_type == "application/json":
            params = await request.json()
        else:
            params = dict(await request.post())
        if method == "getMe":
            bot_id = int(token.split(":")[0]) if token.split(":")[0].isdigit() else 1
            return web.json_response({"ok": True, "result": {
                "id": bot_id, "is_bot": True, "first_name": "Sandbox bot", "username": "sandbox_bot",
                "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False,
            }})  # fmt: skip
        if method in ("setWebhook", "deleteWebhook"):
            return web.json_response({"ok": True, "result": True, "description": "Webhook was set"})
        if method != "sendMessage":
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        chaos = await self._chaos()
        if chaos == 429:
            retry = self.config.retry_after
            return web.json_response({"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {retry}",
                                      "parameters": {"retry_after": retry}}, status=429)  # fmt: skip
        if chaos:
            return web.json_response({"ok": False, "error_code": 502, "description": "Bad Gateway"}, status=502)
        chat_id = str(params.get("chat_id", ""))
        if not re.fullmatch(r"-?\d+", chat_id):
            return web.json_response(
                {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, 400
            )
        if int(chat_id) > self.config.blocked_chat_above:
            return web.json_response(
                {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}, status=403
            )
        message_id = random.randint(1, 2**31)
        markup = params.get("reply_markup")
        if isinstance(markup, str):
            markup = json.loads(markup)
        self.record("telegram", chat_id, id=str(message_id), text=params.get("text"),
                    parse_mode=params.get("parse_mode"), reply_markup=markup)  # fmt: skip
        return web.json_response({"ok": True, "result": {
            "message_id": message_id, "date": int(time.time()), "text": params.get("text", ""),
            "chat": {"id": int(chat_id), "type": "private"},
            "from": {"id": 1, "is_bot": True, "first_name": "Sandbox bot", "username": "sandbox_bot"},
        }})  # fmt: skip

    # -- outgoing webhooks (the sandbox plays the brand's endpoint) ------------------------------------------
    async def hook(self, request: web.Request) -> web.Response:
        chaos = await self._chaos()
        if chaos:
            return web.Response(status=chaos, headers={"Retry-After": str(self.config.retry_after)})
        body = await request.read()
        try:
            payload = json.loads(body)
        except ValueError:
            return web.Response(status=400, text="not JSON")
        contact = payload.get("contact") if isinstance(payload, dict) else None
        to = str(contact.get("id", "")) if isinstance(contact, dict) else ""
        to = to or request.path
        self.record("webhook", to, payload=payload, signature=request.headers.get("X-Hub-Signature", ""),
                    raw=body.decode())  # fmt: skip
        return web.json_response({"ok": True})

    # -- inspection ----------------------------------------------------------------------------------
    async def sink(self, request: web.Request) -> web.Response:
        """Swallows callbacks (benchmarks point the sandbox's own events here): counted, not kept."""
        await request.read()
        self.sunk += 1
        return web.Response(status=204)

    async def list_requests(self, request: web.Request) -> web.Response:
        to = request.query.get("to")
        provider = request.query.get("provider")
        rows = [r for r in self.requests if (not to or r["to"] == to) and (not provider or r["provider"] == provider)]
        return web.json_response({"count": len(rows), "results": rows[-int(request.query.get("limit", 1000)) :]})

    async def get_counts(self, request: web.Request) -> web.Response:
        duplicates = {to: n for to, n in self.counts.items() if n > 1}
        return web.json_response({
            "total": sum(self.counts.values()), "addresses": len(self.counts), "duplicates": duplicates,
            "callbacks_sent": self.callbacks_sent, "callback_failures": self.callback_failures,
            "callbacks_pending": len(self._pending), "sunk": self.sunk, "counts": dict(self.counts) if "full" in request.query else {},
        })  # fmt: skip

    async def reset(self, request: web.Request) -> web.Response:
        self.requests.clear()
        self.counts.clear()
        self.callbacks_sent = self.callback_failures = 0
        return web.json_response({"ok": True})

    async def config_view(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            changes = await request.json()
            unknown = set(changes) - {f.name for f in dataclasses.fields(Config)}
            if unknown:
                return web.json_response({"error": f"unknown settings: {', '.join(sorted(unknown))}"}, status=400)
            self.config = dataclasses.replace(self.config, **changes)
        return web.json_response(dataclasses.asdict(self.config))

    async def public_key_view(self, request: web.Request) -> web.Response:
        return web.Response(text=self.public_key())

    async def close(self, app=None) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=40 * 1024 * 1024)
        app.add_routes([
            web.post("/2010-04-01/Accounts/{sid}/Messages.json", self.twilio_messages),
            web.get("/2010-04-01/Accounts/{sid}.json", self.twilio_account),
            web.post("/v3/mail/send", self.sendgrid_send),
            web.get("/v3/user/account", self.sendgrid_account),
            web.route("*", "/bot{token}/{method}", self.telegram),
            web.post("/hook", self.hook),
            web.post("/hook/{rest:.*}", self.hook),
            web.get("/_sandbox/requests", self.list_requests),
            web.get("/_sandbox/counts", self.get_counts),
            web.post("/_sandbox/reset", self.reset),
            web.route("*", "/_sandbox/config", self.config_view),
            web.get("/_sandbox/sendgrid-public-key", self.public_key_view),
            web.post("/_sandbox/sink", self.sink),
        ])  # fmt: skip
        app.on_cleanup.append(self.close)
        return app

    # -- SMTP ---------------------------------------------------------------------------------------
    async def smtp_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Just enough ESMTP for Django's SMTP backend: EHLO, MAIL, RCPT (bounces refused), DATA, QUIT."""

        def say(line: str) -> None:
            writer.write((line + "\r\n").encode())

        say("220 sandbox ESMTP")
        sender, recipients = None, []
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await writer.drain()
                line = (await reader.readline()).decode(errors="replace").strip()
                if not line:
                    break
                verb = line[:4].upper()
                if verb in ("EHLO", "HELO"):
                    writer.write(b"250-sandbox\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                elif verb == "MAIL":
                    sender, recipients = line.split(":", 1)[1].strip(" <>"), []
                    say("250 OK")
                elif verb == "RCPT":
                    address = line.split(":", 1)[1].split()[0].strip(" <>").lower()
                    if address.endswith("@" + self.config.bounce_domain):
                        say("550 5.1.1 user unknown")
                    else:
                        recipients.append(address)
                        say("250 OK")
                elif verb == "DATA":
                    if not recipients:
                        say("554 no valid recipients")
                        continue
                    say("354 end with .")
                    await writer.drain()
                    raw = (await reader.readuntil(b"\r\n.\r\n"))[:-5]
                    message = email.message_from_bytes(raw.replace(b"\r\n..", b"\r\n."))
                    for address in recipients:
                        self.record("smtp", address, subject=message.get("Subject", ""), sender=sender,
                                    headers=dict(message.items()))  # fmt: skip
                    say("250 OK queued")
                elif verb in ("RSET", "NOOP"):
                    sender, recipients = (None, []) if verb == "RSET" else (sender, recipients)
                    say("250 OK")
                elif verb == "QUIT":
                    say("221 bye")
                    break
                else:
                    say("502 command not implemented")
            await writer.drain()
        writer.close()


def _signing_key(path: str) -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key, or the one in ``path`` (written there first if absent), so a restarted
    sandbox keeps the public key the hub's accounts were given."""
    if path:
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as file:
            return serialization.load_pem_private_key(file.read(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    if path:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        with open(path, "wb") as file:
            file.write(pem)
    return key


def _basic_auth_password(request) -> str | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        return base64.b64decode(header[6:]).decode().split(":", 1)[1]
    except (ValueError, IndexError):
        return None


def _twilio_error(status: int, code: int, message: str, headers=None) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status, headers=headers)


def _substitute(text: str, substitutions: dict) -> str:
    for key, value in substitutions.items():
        text = text.replace(key, value)
    return text


def _segments(body: str) -> int:
    from channels.sms import sms_segments

    return max(1, sms_segments(body)[1])


def twilio_signature(token: str, url: str, params: dict) -> str:
    """Twilio's algorithm: HMAC-SHA1 over the URL followed by the sorted POST parameters."""
    data = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def parse_form(body: bytes) -> dict:
    return dict(parse_qsl(body.decode()))
