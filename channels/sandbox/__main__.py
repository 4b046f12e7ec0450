"""``python -m channels.sandbox --port 8025 [--smtp-port 8026] [--latency-ms 0] [--rate-429 0.1] ...``

Settings come from, lowest first: a JSON file (``--config``), ``SANDBOX_<SETTING>`` environment
variables (``SANDBOX_LATENCY_MS=50``; dicts as JSON), then command-line flags. A running sandbox
also takes ``POST /_sandbox/config`` with a JSON object of changes.
"""

import argparse
import dataclasses
import json
import logging
import os

from . import Config, serve


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The sandbox's options (also added to ``manage.py sandbox``)."""
    parser = parser or argparse.ArgumentParser(description="Offline Twilio / SendGrid / Telegram / SMTP sandbox.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--smtp-port", type=int, default=8026, help="0 turns the SMTP server off.")
    parser.add_argument("--config", help="JSON file with sandbox settings (see channels/sandbox/server.py Config).")
    for field in dataclasses.fields(Config):
        if field.type in (float, int, str):
            parser.add_argument("--" + field.name.replace("_", "-"), type=field.type)
        elif field.type is bool:
            parser.add_argument("--" + field.name.replace("_", "-"), type=lambda v: v.lower() in ("1", "true", "yes"))
    return parser


def run(options: dict) -> None:
    """Start the sandbox from parsed options: file, then environment, then flags."""
    values = {}
    if options.get("config"):
        with open(options["config"]) as file:
            values = json.load(file)
    values.update(_from_environment(os.environ))
    for field in dataclasses.fields(Config):
        if options.get(field.name) is not None:
            values[field.name] = options[field.name]
    logging.basicConfig(level=logging.WARNING, format="sandbox %(levelname)s %(message)s")
    serve(options["host"], options["port"], options["smtp_port"], Config(**values))


def main(argv=None) -> None:
    run(vars(build_parser().parse_args(argv)))


def _from_environment(environ) -> dict:
    """``SANDBOX_RATE_429=0.1`` and friends, typed like the Config field they set."""
    values = {}
    for field in dataclasses.fields(Config):
        raw = environ.get("SANDBOX_" + field.name.upper())
        if raw is None:
            continue
        if field.type is bool:
            values[field.name] = raw.lower() in ("1", "true", "yes")
        elif field.type in (int, float, str):
            values[field.name] = field.type(raw)
        else:
            values[field.name] = json.loads(raw)
    return values


if __name__ == "__main__":
    main()
