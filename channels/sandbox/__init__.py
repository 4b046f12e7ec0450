"""Run the provider sandbox: ``python -m channels.sandbox`` or, in tests, ``running()`` in a thread."""

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from aiohttp import web

from .server import Config, Sandbox, twilio_signature

__all__ = ["Config", "Sandbox", "free_port", "running", "serve", "spawn", "twilio_signature"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(
    env: dict | None = None, log=subprocess.DEVNULL, timeout: float = 20, port: int = 0
) -> tuple[subprocess.Popen, str]:
    """The sandbox in its own process on ``port`` (0: a free one), as in production and benchmarks, once it answers.

    ``env`` is the child's whole environment (``SANDBOX_*`` variables configure it); returns the
    process and its base URL.
    """
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "channels.sandbox", "--port", str(port), "--smtp-port", "0"],
        cwd=Path(__file__).resolve().parents[2], env=env, stdout=log, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url + "/_sandbox/counts", timeout=1).read()  # noqa: S310 - our own http URL
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the provider sandbox did not start on port {port}") from None
            time.sleep(0.05)


async def _start(sandbox: Sandbox, host: str, port: int, smtp_port: int | None):
    runner = web.AppRunner(sandbox.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=2048).start()
    smtp = await asyncio.start_server(sandbox.smtp_session, host, smtp_port) if smtp_port else None
    return runner, smtp


def serve(host: str = "127.0.0.1", port: int = 8025, smtp_port: int | None = 8026, config: Config | None = None):
    """Run until interrupted (the command-line entry point)."""
    sandbox = Sandbox(config)

    async def main():
        runner, smtp = await _start(sandbox, host, port, smtp_port)
        smtp_note = f"SMTP on {smtp_port}" if smtp_port else "no SMTP"
        print(f"provider sandbox on http://{host}:{port} ({smtp_note}); state at /_sandbox/counts", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            if smtp:
                smtp.close()
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@contextlib.contextmanager
def running(config: Config | None = None):
    """A sandbox on free ports in a background thread: yields (sandbox, base_url, smtp_port)."""
    sandbox = Sandbox(config)
    port, smtp_port = free_port(), free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder = {}

    def run():
        asyncio.set_event_loop(loop)
        holder["runner"], holder["smtp"] = loop.run_until_complete(_start(sandbox, "127.0.0.1", port, smtp_port))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="provider-sandbox", daemon=True)
    thread.start()
    started.wait(10)
    sandbox.loop = loop
    try:
        yield sandbox, f"http://127.0.0.1:{port}", smtp_port
    finally:

        async def stop():
            holder["smtp"].close()
            await holder["runner"].cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
