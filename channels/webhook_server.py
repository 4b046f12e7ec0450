"""The fast path for providers' webhooks: an aiohttp front end that commits requests in groups.

It serves the webhook paths of ``channels/urls.py`` with the rules of ``channels.webhooks`` (the same
functions the Django views call): the account is looked up (cached per process), the request verified
and normalized in the event loop, then queued. A writer thread takes what has queued up (everything
that arrived during the previous commit, at most ``max_batch``) and writes it in ONE transaction: the
events (COPY into a staging table, one ``INSERT … ON CONFLICT DO NOTHING RETURNING``), what the fresh
ones do (one ``delivery_events`` signal per account: ``campaigns`` moves the messages in its batched
path; keywords, suppressions) and every request's log line (COPY). Only after that commit does each
request get its answer; rejected requests (403/400/404) are logged in the same transaction. If the
commit fails, each request of the batch is retried in a transaction of its own, so one bad request
cannot fail its neighbours; a request whose own transaction fails too answers 500 (the provider
retries; nothing answered 200 is ever lost, and a retried event is a duplicate). ``linger`` makes an
idle server wait that long for more requests before a batch; it costs throughput under a closed-loop
load (527/s at 2 ms against 922/s at 0, same machine and minute), so it is 0 by default.

Accounts are cached for ``account_ttl`` seconds (default 5): a rotated token or key is accepted as soon
as it is saved (a request that fails verification re-reads its account, at most once a second per
account), and the old one is refused at most ``account_ttl`` seconds after the rotation.
"""

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import web
from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from .models import ChannelAccount, WebhookLog
from .webhooks import (
    ENDPOINTS,
    Endpoint,
    Inbound,
    Keys,
    Rejected,
    Verified,
    log_fields,
    note_rejection,
    record_batch,
    unknown_account,
)

log = logging.getLogger(__name__)
ROUTES = {  # the paths of channels/urls.py
    "/webhooks/twilio/{account_id:\\d+}/status/": "twilio-status",
    "/webhooks/twilio/{account_id:\\d+}/inbound/": "twilio-inbound",
    "/webhooks/sendgrid/{account_id:\\d+}/events/": "sendgrid-events",
    "/webhooks/telegram/{account_id:\\d+}/": "telegram",
}
INGEST = web.AppKey("ingest", object)
FAILED = (500, "not stored, please retry", "text/plain")


@dataclass
class Pending:
    """One verified (or rejected) request waiting for its batch's commit."""

    endpoint: Endpoint
    account_id: int
    account: ChannelAccount | None
    log: dict  # the WebhookLog fields as received
    verified: Verified | None
    rejected: Rejected | None
    answer: asyncio.Future


def _fetch(account_id: int) -> tuple[ChannelAccount, Keys] | None:
    """Runs in the lookup thread: the account with its brand, and its secrets decrypted there."""
    try:
        account = ChannelAccount.objects.select_related("brand").filter(pk=account_id).first()
    except Exception:
        connection.close()  # a broken connection is reopened by the next lookup; this request answers 500
        raise
    if account is None:
        return None
    keys = Keys(account)
    keys.credentials, keys.webhook_secret  # noqa: B018 - decrypt now, off the event loop
    return account, keys


class Accounts:
    """Accounts by id, each kept ``ttl`` seconds; concurrent misses for one id share one query."""

    def __init__(self, ttl: float, reread_after: float, executor: ThreadPoolExecutor):
        self.ttl, self.reread_after, self._executor = ttl, reread_after, executor
        self._entries: dict[int, tuple[float, tuple[ChannelAccount, Keys]]] = {}
        self._loading: dict[int, asyncio.Future] = {}

    async def get(self, account_id: int, *, reread: bool = False) -> tuple[ChannelAccount, Keys] | None:
        now = time.monotonic()
        entry = self._entries.get(account_id)
        if entry is not None:
            age = now - entry[0]
            if age < (min(self.reread_after, self.ttl) if reread else self.ttl):
                return entry[1]
        loading = self._loading.get(account_id)
        if loading is None:
            loading = asyncio.get_running_loop().run_in_executor(self._executor, _fetch, account_id)
            self._loading[account_id] = loading
            try:
                found = await loading
            finally:
                del self._loading[account_id]
            if found is None:
                self._entries.pop(account_id, None)  # unknown ids are not cached: a new account is found at once
            else:
                self._entries[account_id] = (now, found)
            return found
        return await asyncio.shield(loading)


_LOG_COLUMNS = ("account_id", "brand_id", "provider", "kind", "path", "headers", "body", "verdict", "detail", "events",
                "created_at")  # fmt: skip


def _write(batch: list[Pending]) -> None:
    """One transaction for the whole batch: events, what the fresh ones do, every log line."""
    postgres = connection.vendor == "postgresql"
    with transaction.atomic():
        accepted = [p for p in batch if p.verified is not None]
        fresh_of = record_batch([(p.account, p.verified.events) for p in accepted], staged=True)
        lines = []
        for p, fresh in zip(accepted, fresh_of, strict=True):
            if fresh and p.verified.after:
                p.verified.after(fresh)
            lines.append((p, p.verified.verdict(fresh), "", len(fresh)))
        lines.extend((p, p.rejected.verdict, p.rejected.detail[:300], 0) for p in batch if p.rejected is not None)
        if not postgres:
            WebhookLog.objects.bulk_create(
                WebhookLog(**p.log, account=p.account, brand_id=p.account.brand_id if p.account else None,
                           verdict=verdict, detail=detail, events=events)
                for p, verdict, detail, events in lines
            )  # fmt: skip
            return
        now = timezone.now()
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY {WebhookLog._meta.db_table} ({', '.join(_LOG_COLUMNS)}) FROM STDIN") as copy,
        ):  # the log lines formatted in C, not one bound parameter at a time
            for p, verdict, detail, events in lines:
                log = p.log
                copy.write_row((p.account.pk if p.account else None, p.account.brand_id if p.account else None,
                                log["provider"], log["kind"], log["path"], json.dumps(log["headers"]), log["body"],
                                verdict, detail, events, now))  # fmt: skip


def _answer(p: Pending) -> tuple[int, str, str | None]:
    if p.rejected is not None:
        return p.rejected.status, p.rejected.detail, "text/plain"
    return 200, p.verified.answer, p.verified.content_type


def _alone(p: Pending) -> tuple[int, str, str | None]:
    try:
        _write([p])
    except Exception:
        log.exception("a %s %s webhook for account %s was not stored", p.endpoint.provider, p.endpoint.kind,
                      p.account_id)  # fmt: skip
        connection.close()
        return FAILED
    return _answer(p)


def commit(batch: list[Pending]) -> list[tuple[int, str, str | None]]:
    """Runs in the writer thread: write the batch, else each request alone; the answers, in order."""
    try:
        _write(batch)
        answers = [_answer(p) for p in batch]
    except Exception:
        log.exception("a batch of %d webhook requests failed", len(batch))
        connection.close()  # a broken connection is reopened by the next query
        answers = [FAILED] if len(batch) == 1 else [_alone(p) for p in batch]
    for p, answer in zip(batch, answers, strict=True):
        if p.rejected is not None and answer is not FAILED:
            note_rejection(p.endpoint, p.account_id, p.rejected)
    return answers


class GroupCommit:
    """Collects requests and hands them to the writer thread a batch at a time."""

    def __init__(self, *, linger: float, max_batch: int, executor: ThreadPoolExecutor):
        self.linger, self.max_batch, self._executor = linger, max_batch, executor
        self._pending: list[Pending] = []
        self._wake, self._full = asyncio.Event(), asyncio.Event()
        self.committed = self.requests = 0  # batches and requests, for the operator

    def submit(self, pending: Pending) -> None:
        self._pending.append(pending)
        self._wake.set()
        if len(self._pending) >= self.max_batch:
            self._full.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.linger and len(self._pending) < self.max_batch:  # idle until now: let more requests join
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.linger)
            while self._pending:  # under load: whatever arrived during the last commit is the next batch
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    answers = await loop.run_in_executor(self._executor, commit, batch)
                except Exception:  # the thread pool itself failed: nothing of the batch is known to be stored
                    log.exception("webhook writer failed")
                    answers = [FAILED] * len(batch)
                self.committed, self.requests = self.committed + 1, self.requests + len(batch)
                for p, answer in zip(batch, answers, strict=True):
                    if not p.answer.done():  # the client may have gone; its request is stored all the same
                        p.answer.set_result(answer)
            self._wake.clear()


def _close_connection() -> None:
    connection.close()  # looked up in the thread that runs this: that thread's connection


class Ingest:
    """The per-process state: the account cache, the batcher and their two database threads."""

    def __init__(self, *, linger: float = 0.0, max_batch: int = 500, account_ttl: float = 5.0,
                 reread_after: float = 1.0):  # fmt: skip
        """``reread_after``: seconds between re-reads of one account after failed verifications."""
        self.lookups = ThreadPoolExecutor(1, thread_name_prefix="webhook-accounts")
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="webhook-writer")
        self.linger, self.max_batch = linger, max_batch
        self.account_ttl, self.reread_after = account_ttl, reread_after

    async def start(self, app: web.Application) -> None:
        self.accounts = Accounts(self.account_ttl, self.reread_after, self.lookups)
        self.batches = GroupCommit(linger=self.linger, max_batch=self.max_batch, executor=self.writer)
        self.task = asyncio.create_task(self.batches.run())

    async def stop(self, app: web.Application) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        loop = asyncio.get_running_loop()
        for executor in (self.lookups, self.writer):  # each thread's own database connection
            await loop.run_in_executor(executor, _close_connection)
            executor.shutdown()

    async def handle(self, request: web.Request) -> web.Response:
        endpoint = ENDPOINTS[request.match_info.route.name]
        account_id = int(request.match_info["account_id"])
        body = (await request.read()).decode("utf-8", errors="replace")
        full_path = request.raw_path
        headers = {k.title(): v for k, v in request.headers.items()}  # as Django names them, for the log
        pending = Pending(endpoint, account_id, None, log_fields(endpoint, full_path, headers, body), None, None,
                          asyncio.get_running_loop().create_future())  # fmt: skip
        found = await self.accounts.get(account_id)
        if found is None or found[0].provider not in endpoint.providers:
            pending.rejected = unknown_account()
        else:
            pending.account = found[0]
            try:
                urlencoded = request.content_type == "application/x-www-form-urlencoded"
                form, query = _fields(body if urlencoded else ""), _fields(full_path.partition("?")[2])
                inbound = Inbound(full_path, request.headers, body, form, query)
                pending.verified = endpoint.process(inbound, *found)
            except Rejected as exc:
                pending.rejected = exc
                if exc.verdict == WebhookLog.Verdict.FORGED:
                    # Perhaps the secret was just rotated: read the account again (at most once a second).
                    newer = await self.accounts.get(account_id, reread=True)
                    if newer is not None and newer[1] is not found[1] and newer[0].provider in endpoint.providers:
                        pending.account = newer[0]
                        try:
                            pending.verified, pending.rejected = endpoint.process(inbound, *newer), None
                        except Rejected as again:
                            pending.rejected = again
        self.batches.submit(pending)
        status, text, content_type = await pending.answer
        return web.Response(status=status, text=text, content_type=content_type or "text/html")


class Form(dict):
    """Form or query fields as ``QueryDict(text)`` holds them, for the rules' reads: ``form[k]``, ``get`` and
    ``items()`` give the last value of a repeated field (as Django does), ``getlist``/``getall`` every value
    (Twilio signs each). A plain dict of the last values underneath, so those reads run in C: a
    ``MultiValueDict`` answers each in Python (9 reads a status callback)."""

    __slots__ = ("lists",)

    def getlist(self, key: str, default=None) -> list[str]:
        return list(self.lists[key]) if key in self.lists else ([] if default is None else default)

    getall = getlist  # what Twilio's RequestValidator asks for first


def _fields(text: str) -> Form:
    """What ``QueryDict(text)`` holds (``parse_qsl`` with blank values kept, ``+`` and ``%xx`` decoded as
    UTF-8 with replacement, at most ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` fields), in a fifth of its time:
    only the pairs that have a ``%`` or ``+`` are unquoted."""
    form, lists = Form(), {}
    form.lists = lists
    if not text:
        return form
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    if limit is not None and text.count("&") >= limit:  # parse_qsl's own count: one more field than "&"s
        raise Rejected(WebhookLog.Verdict.MALFORMED, "too many fields", 400)
    for pair in text.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if "%" in pair or "+" in pair:
            key, value = unquote(key.replace("+", " ")), unquote(value.replace("+", " "))
        form[key] = value
        if key in lists:
            lists[key].append(value)
        else:
            lists[key] = [value]
    return form


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def build_app(**options) -> web.Application:
    """The aiohttp application; ``options`` go to ``Ingest`` (linger, max_batch, account_ttl)."""
    ingest = Ingest(**options)
    app = web.Application(client_max_size=settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440)
    for path, name in ROUTES.items():
        app.router.add_post(path, ingest.handle, name=name)
    app.router.add_get("/healthz", _healthz)
    app.on_startup.append(ingest.start)
    app.on_cleanup.append(ingest.stop)
    app[INGEST] = ingest
    return app


def _run(host: str, port: int, reuse_port: bool, options: dict) -> str:
    app = build_app(**options)
    # Python's default 5 ms GIL switch interval: round one's 0.5 ms (to hand the writer thread the GIL back
    # sooner after each round trip) cost more than it gave once the load generator was cheap: 1,270 and
    # 1,454/s against 865 and 1,341/s at 32 requests in flight, 2,419 against 1,528/s at 256, and ~15 %
    # more server CPU a callback, on the loaded machine; level when it was quiet (docs/benchmarks.md).
    web.run_app(app, host=host, port=port, access_log=None, print=None, reuse_port=reuse_port or None)
    batches = app[INGEST].batches
    return f"{batches.requests} requests in {batches.committed} transactions"


def serve(host: str, port: int, processes: int = 1, **options) -> str:
    """Run until SIGINT/SIGTERM; returns what this process did, for the operator.

    ``processes`` > 1 forks that many servers in all on one port (``SO_REUSEPORT``: the kernel spreads
    the connections), each with its own event loop, cache and writer: more batches in flight at once.
    The first process stops the others when it is stopped."""
    connections.close_all()  # nothing opened before the fork may be shared by the processes
    children = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:  # a child: serve, then leave without running the parent's clean-up
            try:
                _run(host, port, True, options)
            finally:
                os._exit(0)
        children.append(pid)
    try:
        return _run(host, port, processes > 1, options)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            os.waitpid(pid, 0)


@contextlib.contextmanager
def running(host: str = "127.0.0.1", port: int = 0, **options):
    """The server on its own thread and event loop (tests); yields its base URL, stops on exit.

    Everything asyncio happens on that thread: the caller's thread may have a loop of its own running
    (Playwright's sync API leaves one in pytest's main thread)."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(build_app(**options), access_log=None)
    started: list = []

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    def serve_forever() -> None:
        asyncio.set_event_loop(loop)
        started.append(loop.run_until_complete(start()))
        loop.run_forever()

    thread = threading.Thread(target=serve_forever, name="webhook-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not started:
        raise RuntimeError("the webhook server did not start")
    try:
        yield f"http://{host}:{started[0]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
