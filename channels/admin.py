"""Sender accounts in the admin: secrets go in, never come back out.

Credentials are write-only: a secret field is always rendered empty, its help text shows only a
mask of what is stored, and leaving it blank keeps the stored value. Two actions talk to the
provider: "check credentials" and "send a test message" (to the address typed beside the action
menu), both through the adapter registry, so they exercise exactly what a campaign would use.
"""

import secrets
import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import ImproperlyConfigured
from django.utils.html import format_html, format_html_join

from audiences.normalize import normalize_email, normalize_phone
from marketing_hub.admin_mixins import BrandScopedModelAdmin

from . import crypto
from .exceptions import ProviderError
from .models import CREDENTIAL_KEYS, PROVIDER_CHANNEL, SECRET_KEYS, ChannelAccount, ChannelKind, Provider
from .providers import OutboundMessage, get_adapter

# Keys an account of the provider cannot work without (the others are optional).
REQUIRED_KEYS = {
    Provider.TWILIO_SMS: ("account_sid", "auth_token"),
    Provider.TWILIO_WHATSAPP: ("account_sid", "auth_token"),
    Provider.SENDGRID: ("api_key",),
    Provider.SMTP: ("host",),
    Provider.TELEGRAM: ("bot_token",),
    Provider.WEBHOOK: ("url", "secret"),
}
CREDENTIAL_HELP = {
    "account_sid": "Twilio Account SID (AC...).",
    "auth_token": "Twilio Auth Token; also verifies Twilio's signed callbacks.",
    "api_key": "SendGrid API key (SG....).",
    "webhook_public_key": "SendGrid Event Webhook verification key (base64 ECDSA public key).",
    "host": "SMTP server host name.",
    "port": "SMTP port (587 with STARTTLS, 465 with TLS).",
    "username": "SMTP user name.",
    "password": "SMTP password.",
    "use_tls": "true / false.",
    "bot_token": "Telegram bot token from @BotFather (123456:ABC...).",
    "url": "Where outgoing webhooks are POSTed.",
    "secret": "Shared secret the receiver checks the X-Hub-Signature HMAC with.",
}
ALL_KEYS = list(dict.fromkeys(key for keys in CREDENTIAL_KEYS.values() for key in keys))


def field_name(key: str) -> str:
    return f"credential_{key}"


def credential_field(key: str, stored=None) -> forms.CharField:
    """A write-only field for one credential; the help text shows a mask of what is stored."""
    help_text = CREDENTIAL_HELP.get(key, "")
    if stored not in (None, ""):
        shown = crypto.mask(stored) if key in SECRET_KEYS else str(stored)  # e.g. the Account SID
        help_text = f"{help_text} Stored: {shown}. Blank keeps it."
    widget = (
        forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
        if key in SECRET_KEYS
        else forms.TextInput(attrs={"autocomplete": "off"})
    )
    return forms.CharField(required=False, strip=True, label=key.replace("_", " "), help_text=help_text, widget=widget)


# Declared on a base class so the admin's fieldsets may name them (ModelAdmin checks declared fields).
CredentialFields = type("CredentialFields", (forms.Form,), {field_name(key): credential_field(key) for key in ALL_KEYS})


class ChannelAccountForm(CredentialFields, forms.ModelForm):
    """A model form plus one write-only field per credential key of every provider.

    ``clean`` keeps only the keys of the chosen provider, so switching an account from Twilio to
    SendGrid drops the Twilio token instead of carrying it along encrypted forever.
    """

    # Not named ``webhook_secret``: a read-only admin view would print the model's property in full.
    webhook_secret_input = forms.CharField(
        required=False,
        label="Webhook secret",
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Verifies inbound webhooks (Telegram's secret token). Blank keeps the stored secret.",
    )
    new_webhook_secret = forms.BooleanField(
        required=False, label="Generate a new webhook secret", help_text="Replaces the stored one with a random one."
    )

    class Meta:
        model = ChannelAccount
        fields = [
            "brand", "name", "provider", "channel", "is_active",
            "from_number", "messaging_service_sid", "from_email", "from_name", "bot_username",
            "rate_per_second", "daily_quota", "quota_window", "cost_per_message", "currency", "base_url",
        ]  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "channel" not in self.fields:
            return  # read-only (view permission): the admin shows no inputs at all
        self.fields["channel"].required = False
        self.fields["channel"].help_text = "Follows from the provider when left empty."
        stored = self.instance.credentials if self.instance.pk else {}
        for key in ALL_KEYS:
            self.fields[field_name(key)] = credential_field(key, stored.get(key))
        if self.instance.pk and self.instance.webhook_secret_encrypted:
            masked = crypto.mask(self.instance.webhook_secret)
            self.fields["webhook_secret_input"].help_text = f"Stored: {masked}. Blank keeps it."

    def clean(self):
        data = super().clean()
        provider = data.get("provider")
        if not provider:
            return data
        expected = PROVIDER_CHANNEL[Provider(provider)]
        if not data.get("channel"):
            data["channel"] = expected
        elif data["channel"] != expected:
            self.add_error(
                "channel", f"Provider {provider!r} sends on channel {expected.value!r}, not {data['channel']!r}."
            )
        stored = self.instance.credentials if self.instance.pk else {}
        credentials = {}
        for key in CREDENTIAL_KEYS[Provider(provider)]:
            value = data.get(field_name(key)) or stored.get(key)
            if value not in (None, ""):
                credentials[key] = value
        for key in REQUIRED_KEYS[Provider(provider)]:
            if key not in credentials:
                self.add_error(field_name(key), f"A {provider} account needs the credential {key!r}.")
        self.credentials = credentials
        return data

    def save(self, commit=True):
        account = super().save(commit=False)
        account.channel = self.cleaned_data["channel"]
        account.set_credentials(self.credentials)
        if self.cleaned_data.get("new_webhook_secret"):
            account.set_webhook_secret(secrets.token_urlsafe(32))
        elif self.cleaned_data.get("webhook_secret_input"):
            account.set_webhook_secret(self.cleaned_data["webhook_secret_input"])
        elif not account.webhook_secret_encrypted and account.provider == Provider.TELEGRAM:
            # Telegram only authenticates its updates by this token: never leave a bot without one.
            account.set_webhook_secret(secrets.token_urlsafe(32))
        if commit:
            account.save()
        return account


class TestMessageForm(ActionForm):
    """The action bar with a field for the test recipient (phone, email, chat id)."""

    test_recipient = forms.CharField(
        required=False,
        label="Test recipient",
        widget=forms.TextInput(attrs={"placeholder": "+14155550100 / you@example.com / chat id"}),
    )


def test_address(channel: str, raw: str, region: str = "") -> str:
    """The recipient in the form the channel's adapter takes; ValueError says what is wrong."""
    raw = (raw or "").strip()
    if channel == ChannelKind.WEBHOOK:
        return raw or "test"  # the URL is the account's; the recipient is only a label
    if not raw:
        raise ValueError("type the test recipient into the field beside the action menu")
    if channel in (ChannelKind.SMS, ChannelKind.WHATSAPP):
        return normalize_phone(raw, region)[0]
    if channel == ChannelKind.EMAIL:
        return normalize_email(raw)
    if channel == ChannelKind.TELEGRAM:
        if not raw.lstrip("-").isdigit():
            raise ValueError(f"{raw!r} is not a Telegram chat id (a number)")
        return raw
    raise ValueError(f"unknown channel {channel!r}")


def test_message(account: ChannelAccount, to: str) -> OutboundMessage:
    text = f"Test message from Marketing Hub ({account.brand.name} / {account.name})."
    return OutboundMessage(
        message_id=f"test-{uuid.uuid4().hex[:16]}",
        to=to,
        body=text,
        subject="Marketing Hub test message" if account.channel == ChannelKind.EMAIL else "",
        html=f"<p>{text}</p>" if account.channel == ChannelKind.EMAIL else "",
        payload={"test": True, "text": text} if account.channel == ChannelKind.WEBHOOK else None,
    )


def describe_failure(account: ChannelAccount, exc: Exception) -> str:
    """An error line for the admin; never includes credentials (only the provider's message)."""
    if isinstance(exc, LookupError):
        return f"{account}: cannot reach the provider: {exc}."
    if isinstance(exc, ImproperlyConfigured):
        return f"{account}: not configured: {exc}"
    if isinstance(exc, ProviderError):
        code = f" [{exc.status or '-'} / {exc.code}]" if exc.code else (f" [{exc.status}]" if exc.status else "")
        return f"{account}: {account.get_provider_display()} refused{code}: {exc}"
    return f"{account}: {type(exc).__name__}: {exc}"


@admin.register(ChannelAccount)
class ChannelAccountAdmin(BrandScopedModelAdmin):
    form = ChannelAccountForm
    action_form = TestMessageForm
    actions = ["check_credentials", "send_test_message"]
    list_display = ["name", "brand", "provider", "sender", "rate_per_second", "daily_quota", "is_active"]
    list_filter = ["provider", "channel", "is_active", "brand"]
    search_fields = ["name", "from_number", "from_email", "bot_username"]
    readonly_fields = ["stored_credentials", "status_callback", "created_at", "updated_at"]

    def get_fieldsets(self, request, obj=None):
        writable = self.has_change_permission(request, obj) if obj else self.has_add_permission(request)
        # Read-only viewers get the masks only: write-only inputs have nothing to show.
        credential_fields = [field_name(key) for key in ALL_KEYS] if writable else []
        secret_fields = ["webhook_secret_input", "new_webhook_secret"] if writable else []
        return [
            (None, {"fields": ["brand", "name", "provider", "channel", "is_active"]}),
            (
                "Sender identity",
                {"fields": ["from_number", "messaging_service_sid", "from_email", "from_name", "bot_username"]},
            ),
            (
                "Limits and cost",
                {
                    "fields": [
                        "rate_per_second",
                        "daily_quota",
                        "quota_window",
                        "cost_per_message",
                        "currency",
                        "base_url",
                    ]
                },
            ),
            (
                "Credentials (write-only: blank keeps what is stored; only the provider's keys are kept)",
                {"fields": ["stored_credentials", *credential_fields]},
            ),
            ("Inbound webhooks", {"fields": [*secret_fields, "status_callback"]}),
            ("History", {"fields": ["created_at", "updated_at"]}),
        ]

    @admin.display(description="sender")
    def sender(self, obj):
        return obj.from_number or obj.messaging_service_sid or obj.from_email or obj.bot_username or "-"

    @admin.display(description="stored credentials")
    def stored_credentials(self, obj):
        if not obj or not obj.pk:
            return "-"
        try:
            masked = obj.masked_credentials()
        except ImproperlyConfigured as exc:
            return str(exc)
        if not masked:
            return "none"
        return format_html("<ul>{}</ul>", format_html_join("", "<li><code>{}</code>: {}</li>", masked.items()))

    @admin.display(description="status callback URL")
    def status_callback(self, obj):
        return (obj.status_callback_url() if obj and obj.pk else None) or "-"

    # -- actions ---------------------------------------------------------------------------------
    @admin.action(description="Check credentials with the provider", permissions=["view"])
    def check_credentials(self, request, queryset):
        for account in self.allowed(request, queryset, "view").select_related("brand"):
            try:
                description = get_adapter(account.provider_config()).check_credentials()
            except (LookupError, ImproperlyConfigured, ProviderError) as exc:
                self.message_user(request, describe_failure(account, exc), messages.ERROR)
            else:
                self.message_user(request, f"{account}: credentials work ({description}).", messages.SUCCESS)

    @admin.action(description="Send a test message to the test recipient", permissions=["change"])
    def send_test_message(self, request, queryset):
        raw = request.POST.get("test_recipient", "")
        for account in self.allowed(request, queryset, "change").select_related("brand"):
            try:
                to = test_address(account.channel, raw, account.brand.default_region)
            except ValueError as exc:
                self.message_user(request, f"{account}: test recipient: {exc}.", messages.ERROR)
                continue
            try:
                (result,) = get_adapter(account.provider_config()).send([test_message(account, to)])
            except (LookupError, ImproperlyConfigured, ProviderError) as exc:
                self.message_user(request, describe_failure(account, exc), messages.ERROR)
                continue
            if result.accepted:
                self.message_user(
                    request,
                    f"{account}: test message to {to} accepted (provider id {result.provider_message_id}).",
                    messages.SUCCESS,
                )
            else:
                self.message_user(request, describe_failure(account, result.error), messages.ERROR)
