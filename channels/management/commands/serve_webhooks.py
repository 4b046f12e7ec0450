from django.core.management.base import BaseCommand

from channels.webhook_server import serve


class Command(BaseCommand):
    help = (
        "Serve the providers' webhooks (/webhooks/…) with aiohttp, verifying each request and committing "
        "them in groups; point the providers (or a reverse proxy's /webhooks/ route) at it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--linger-ms", type=float, default=0.0,
                            help="how long an idle server waits for more requests to join a batch "
                                 "(default 0: a batch is what arrived during the previous commit)")  # fmt: skip
        parser.add_argument("--processes", type=int, default=1,
                            help="server processes on the one port (SO_REUSEPORT), each committing its own batches")  # fmt: skip
        parser.add_argument("--max-batch", type=int, default=500, help="requests per transaction at most (500)")
        parser.add_argument("--account-ttl", type=float, default=5.0,
                            help="seconds an account (and its secrets) is cached; an old secret is refused "
                                 "at most this long after a rotation (default 5)")  # fmt: skip

    def handle(self, *args, **options):
        self.stdout.write(f"serving webhooks on http://{options['host']}:{options['port']}/webhooks/")
        done = serve(options["host"], options["port"], options["processes"], linger=options["linger_ms"] / 1000,
                     max_batch=options["max_batch"], account_ttl=options["account_ttl"])  # fmt: skip
        self.stdout.write(f"stopped: {done}")
