"""Email through any ordinary mail server, with Django's SMTP backend (one connection per batch)."""

import smtplib

from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.utils import DNS_NAME  # noqa: F401 - resolves the local name once, before threads

from ..exceptions import ProviderConfigurationError
from . import register
from .base import BaseAdapter, OutboundMessage, SendResult


class SmtpAdapter(BaseAdapter):
    provider = "smtp"
    channel = "email"
    max_batch_size = 100

    def __init__(self, config):
        super().__init__(config)
        if not config.credentials.get("host"):
            raise ProviderConfigurationError("smtp: the account needs the credential 'host'.")
        if not config.sender.get("from_email"):
            raise ProviderConfigurationError("smtp: set the account's from email.")

    def _connection(self):
        credentials = self.config.credentials
        return get_connection(
            "django.core.mail.backends.smtp.EmailBackend",
            host=credentials["host"],
            port=int(credentials.get("port") or 25),
            username=credentials.get("username") or "",
            password=credentials.get("password") or "",
            use_tls=str(credentials.get("use_tls", "")).lower() in ("1", "true", "yes"),
            timeout=self.config.timeout,
            fail_silently=False,
        )

    def _email(self, message: OutboundMessage, connection) -> EmailMultiAlternatives:
        name = message.from_name or self.config.sender.get("from_name", "")
        sender = f"{name} <{self.config.sender['from_email']}>" if name else self.config.sender["from_email"]
        email = EmailMultiAlternatives(
            subject=message.subject, body=message.body, from_email=sender, to=[message.to],
            headers={**message.headers, "X-MH-Message-Id": message.message_id}, connection=connection,
        )  # fmt: skip
        if message.html:
            email.attach_alternative(message.html, "text/html")
        return email

    def send(self, batch: list[OutboundMessage]) -> list[SendResult]:
        connection = self._connection()
        results = []
        try:
            connection.open()
        except (OSError, smtplib.SMTPException) as exc:
            error = self.classify(f"mail server unreachable: {exc}", status=None)
            return [SendResult(m.message_id, accepted=False, error=error) for m in batch]
        try:
            for message in batch:
                try:
                    self._email(message, connection).send()
                    results.append(
                        SendResult(message.message_id, accepted=True, provider_message_id=message.message_id)
                    )
                except smtplib.SMTPRecipientsRefused as exc:
                    code, text = next(iter(exc.recipients.values()))
                    error = self._smtp_error(text.decode(errors="replace"), code)
                    results.append(SendResult(message.message_id, accepted=False, error=error))
                except smtplib.SMTPResponseException as exc:
                    error = self._smtp_error(str(exc.smtp_error), exc.smtp_code)
                    results.append(SendResult(message.message_id, accepted=False, error=error))
                except (TimeoutError, OSError, smtplib.SMTPException) as exc:
                    error = self.classify(f"mail server connection lost: {exc}", status=None)
                    results.append(SendResult(message.message_id, accepted=False, error=error))
        finally:
            try:
                connection.close()
            except (OSError, smtplib.SMTPException):
                pass
        return results

    def _smtp_error(self, text: str, code: int):
        """SMTP's own classes: 4xx is "try again later", 5xx is final (unlike HTTP)."""
        from ..exceptions import ProviderPermanentError, ProviderTransientError

        kind = ProviderTransientError if 400 <= code < 500 else ProviderPermanentError
        return kind(text, provider=self.provider, status=code, code=str(code))

    def check_credentials(self) -> str:
        connection = self._connection()
        try:
            connection.open()
        except (OSError, smtplib.SMTPException) as exc:
            raise self.classify(f"mail server refused or unreachable: {exc}", status=None) from None
        connection.close()
        return f"mail server {self.config.credentials['host']} accepts connections"


register(SmtpAdapter)
