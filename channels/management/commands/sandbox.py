from django.core.management.base import BaseCommand

from channels.sandbox.__main__ import build_parser, run


class Command(BaseCommand):
    help = "Run the offline provider sandbox (Twilio, SendGrid, Telegram, SMTP) - same as python -m channels.sandbox."

    def add_arguments(self, parser):
        build_parser(parser)

    def handle(self, *args, **options):
        run(options)
