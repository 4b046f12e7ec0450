"""Sender accounts: a brand's credentials and limits for one provider, encrypted at rest."""

from django.conf import settings
from django.db import models

from marketing_hub.models import Brand

from . import crypto
from .providers.base import ProviderConfig


class ChannelKind(models.TextChoices):
    SMS = "sms", "SMS"
    WHATSAPP = "whatsapp", "WhatsApp"
    EMAIL = "email", "Email"
    TELEGRAM = "telegram", "Telegram"
    WEBHOOK = "webhook", "Webhook"


class Provider(models.TextChoices):
    TWILIO_SMS = "twilio_sms", "Twilio SMS"
    TWILIO_WHATSAPP = "twilio_whatsapp", "Twilio WhatsApp"
    SENDGRID = "sendgrid", "SendGrid"
    SMTP = "smtp", "SMTP"
    TELEGRAM = "telegram", "Telegram Bot API"
    WEBHOOK = "webhook", "Outgoing webhook"


PROVIDER_CHANNEL = {
    Provider.TWILIO_SMS: ChannelKind.SMS,
    Provider.TWILIO_WHATSAPP: ChannelKind.WHATSAPP,
    Provider.SENDGRID: ChannelKind.EMAIL,
    Provider.SMTP: ChannelKind.EMAIL,
    Provider.TELEGRAM: ChannelKind.TELEGRAM,
    Provider.WEBHOOK: ChannelKind.WEBHOOK,
}

# The credential keys each provider needs (the admin form shows one masked field per key).
CREDENTIAL_KEYS = {
    Provider.TWILIO_SMS: ("account_sid", "auth_token"),
    Provider.TWILIO_WHATSAPP: ("account_sid", "auth_token"),
    Provider.SENDGRID: ("api_key", "webhook_public_key"),
    Provider.SMTP: ("host", "port", "username", "password", "use_tls"),
    Provider.TELEGRAM: ("bot_token",),
    Provider.WEBHOOK: ("url", "secret"),
}
SECRET_KEYS = {"auth_token", "api_key", "password", "bot_token", "secret"}


class QuotaWindow(models.TextChoices):
    CALENDAR_DAY = "calendar_day", "Calendar day (brand time zone)"
    ROLLING_24H = "rolling_24h", "Rolling 24 hours (WhatsApp)"


class ChannelAccount(models.Model):
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="channel_accounts")
    name = models.CharField(max_length=120)
    channel = models.CharField(max_length=16, choices=ChannelKind.choices)
    provider = models.CharField(max_length=20, choices=Provider.choices)
    credentials_encrypted = models.TextField(blank=True, editable=False)
    webhook_secret_encrypted = models.TextField(blank=True, editable=False)
    # sender identity
    from_number = models.CharField(max_length=20, blank=True, help_text="E.164 sender number (SMS, WhatsApp).")
    messaging_service_sid = models.CharField(max_length=40, blank=True, help_text="Twilio Messaging Service SID.")
    from_email = models.EmailField(blank=True)
    from_name = models.CharField(max_length=100, blank=True, help_text="Defaults to the brand's sender name.")
    bot_username = models.CharField(max_length=64, blank=True, help_text="Telegram bot username (for t.me links).")
    # limits and money
    rate_per_second = models.FloatField(default=1.0, help_text="Messages per second (SMS long code: 1).")
    daily_quota = models.PositiveIntegerField(
        null=True, blank=True, help_text="Unique recipients per window (WhatsApp tier: 250, 2000, ...). Empty: none."
    )
    quota_window = models.CharField(max_length=16, choices=QuotaWindow.choices, default=QuotaWindow.CALENDAR_DAY)
    cost_per_message = models.DecimalField(
        max_digits=10, decimal_places=5, default=0, help_text="Per message; per segment for SMS."
    )
    currency = models.CharField(max_length=3, default="USD")
    base_url = models.URLField(blank=True, help_text="Regional endpoint or the provider sandbox; empty: the provider.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["brand", "name"]
        constraints = [models.UniqueConstraint(fields=["brand", "name"], name="channel_account_unique_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_provider_display()})"

    # -- secrets -----------------------------------------------------------------------------------
    @property
    def credentials(self) -> dict:
        return crypto.decrypt_json(self.credentials_encrypted)

    def set_credentials(self, values: dict) -> None:
        self.credentials_encrypted = crypto.encrypt_json({k: v for k, v in values.items() if v not in (None, "")})

    @property
    def webhook_secret(self) -> str:
        return crypto.decrypt_json(self.webhook_secret_encrypted).get("secret", "")

    def set_webhook_secret(self, secret: str) -> None:
        self.webhook_secret_encrypted = crypto.encrypt_json({"secret": secret}) if secret else ""

    def masked_credentials(self) -> dict[str, str]:
        return {k: crypto.mask(v) if k in SECRET_KEYS else str(v) for k, v in self.credentials.items()}

    # -- for adapters ----------------------------------------------------------------------------------
    def status_callback_url(self) -> str | None:
        if self.provider in (Provider.TWILIO_SMS, Provider.TWILIO_WHATSAPP):
            return f"{settings.PUBLIC_BASE_URL}/webhooks/twilio/{self.pk}/status/"
        return None

    def provider_config(self) -> ProviderConfig:
        sender = {
            key: value
            for key, value in {
                "from_number": self.from_number,
                "messaging_service_sid": self.messaging_service_sid,
                "from_email": self.from_email,
                "from_name": self.from_name or self.brand.sender_name,
                "bot_username": self.bot_username,
            }.items()
            if value
        }
        return ProviderConfig(
            provider=self.provider,
            channel=self.channel,
            credentials=self.credentials,
            sender=sender,
            base_url=self.base_url or None,
            status_callback_url=self.status_callback_url(),
            account_id=self.pk,
        )


class WebhookLog(models.Model):
    """Every inbound provider request, as received (credentials stripped), with what we made of it."""

    class Verdict(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        DUPLICATE = "duplicate", "Duplicate (already processed)"
        FORGED = "forged", "Forged signature"
        STALE = "stale", "Stale (outside the replay window)"
        MALFORMED = "malformed", "Malformed"
        UNKNOWN_ACCOUNT = "unknown_account", "Unknown account"

    account = models.ForeignKey(ChannelAccount, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    brand = models.ForeignKey(Brand, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    provider = models.CharField(max_length=20)
    kind = models.CharField(max_length=20, help_text="status, inbound, events, update")
    path = models.CharField(max_length=300)
    headers = models.JSONField(default=dict)
    body = models.TextField(blank=True)
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    detail = models.CharField(max_length=300, blank=True)
    events = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.provider} {self.kind} {self.verdict}"


class ProviderEvent(models.Model):
    """A normalized delivery event, stored append-only; unique per provider event id (idempotency)."""

    account = models.ForeignKey(ChannelAccount, on_delete=models.CASCADE, related_name="+")
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    provider = models.CharField(max_length=20)
    channel = models.CharField(max_length=16)
    event_type = models.CharField(max_length=16)
    provider_event_id = models.CharField(max_length=120)
    provider_message_id = models.CharField(max_length=120, blank=True)
    message_id = models.CharField(max_length=40, blank=True, help_text="Ours, when the provider echoes it.")
    address = models.CharField(max_length=254, blank=True)
    code = models.CharField(max_length=40, blank=True)
    description = models.CharField(max_length=300, blank=True)
    url = models.URLField(max_length=500, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["provider", "provider_event_id"], name="provider_event_once")]
        indexes = [models.Index(fields=["provider_message_id"], name="provider_event_message")]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type} {self.provider_event_id}"
