"""Contacts, their consent and suppressions, static lists and rule-based segments.

Blank addresses are stored as NULL, never ``''``: the per-brand uniqueness of email, phone and
external id is a partial constraint over the rows that have one.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from marketing_hub.models import Brand, validate_time_zone


class Channel(models.TextChoices):
    SMS = "sms", "SMS"
    WHATSAPP = "whatsapp", "WhatsApp"
    EMAIL = "email", "Email"
    TELEGRAM = "telegram", "Telegram"
    WEBHOOK = "webhook", "Webhook"


# Which contact field holds a channel's address.
ADDRESS_FIELD = {
    Channel.SMS: "phone",
    Channel.WHATSAPP: "whatsapp",
    Channel.EMAIL: "email",
    Channel.TELEGRAM: "telegram_chat_id",
}


def consent_column(channel: str) -> str:
    """The Contact column that mirrors the consent status on ``channel``."""
    return f"consent_{channel}"


CONSENT_COLUMNS = frozenset(consent_column(channel) for channel in Channel.values)


class ConsentStatus(models.TextChoices):
    SUBSCRIBED = "subscribed", "Subscribed"
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
    PENDING = "pending", "Pending confirmation"


class SuppressionReason(models.TextChoices):
    HARD_BOUNCE = "hard_bounce", "Hard bounce"
    COMPLAINT = "complaint", "Complaint"
    STOP = "stop", "STOP keyword"
    MANUAL = "manual", "Manual"
    ERASED = "erased", "Erased (GDPR)"


# A WhatsApp number that is not simply the phone (the phone is the default WhatsApp number): only
# these are in the WhatsApp index; a lookup by WhatsApp number finds the others through the phone's.
WHATSAPP_OF_ITS_OWN = Q(whatsapp__isnull=False) & (Q(phone__isnull=True) | ~Q(whatsapp=F("phone")))


def _consent_copy() -> models.CharField:
    return models.CharField(
        max_length=16, blank=True, default="", db_default="", editable=False, choices=ConsentStatus.choices
    )


class Contact(models.Model):
    # An import writes a million contacts, and each pays for every index and foreign-key check:
    # - brand has no index of its own: every index below and the unique keys start with it;
    # - brand is not a database constraint (``db_constraint=False``): PostgreSQL checked it with a
    #   trigger per row. A brand is deleted only through Django, whose CASCADE deletes its contacts
    #   first; the importer locks the brand row (FOR KEY SHARE) in each chunk's transaction, so a
    #   brand deleted during an import stops it instead of leaving contacts behind;
    # - telegram_chat_id is indexed only where set, whatsapp only where it differs from the phone (an
    #   import copies the phone there): ``contacts_by_address`` asks the phone's index for the rest.
    brand = models.ForeignKey(
        Brand, on_delete=models.CASCADE, related_name="contacts", db_index=False, db_constraint=False
    )
    external_id = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    email = models.EmailField(max_length=254, null=True, blank=True)  # noqa: DJ001
    phone = models.CharField(max_length=20, null=True, blank=True, help_text="E.164, e.g. +4915112345678")  # noqa: DJ001
    whatsapp = models.CharField(max_length=20, null=True, blank=True, help_text="E.164; defaults to the phone.")  # noqa: DJ001
    telegram_chat_id = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    locale = models.CharField(max_length=10, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166 code; from the phone when not given.")
    time_zone = models.CharField(max_length=64, blank=True, validators=[validate_time_zone])
    attributes = models.JSONField(default=dict, blank=True)
    # Each channel's current consent status as in ``Consent`` ('' when there is none), copied there by
    # database triggers on every write to audiences_consent (migration 0004), whoever writes: segment
    # counts and the planner read a column of the contact instead of joining a consent row per contact.
    # Read-only for Python: ``save`` never writes them back (an instance may predate a consent change).
    consent_sms = _consent_copy()
    consent_whatsapp = _consent_copy()
    consent_email = _consent_copy()
    consent_telegram = _consent_copy()
    consent_webhook = _consent_copy()
    erased_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["brand", "email"], condition=Q(email__isnull=False), name="contact_unique_email"
            ),
            models.UniqueConstraint(
                fields=["brand", "phone"], condition=Q(phone__isnull=False), name="contact_unique_phone"
            ),
            models.UniqueConstraint(
                fields=["brand", "external_id"],
                condition=Q(external_id__isnull=False),
                name="contact_unique_external_id",
            ),
        ]
        indexes = [
            models.Index(fields=["brand", "country"], name="contact_brand_country"),
            models.Index(fields=["brand", "created_at"], name="contact_brand_created"),
            models.Index(fields=["brand", "whatsapp"], condition=WHATSAPP_OF_ITS_OWN, name="contact_brand_whatsapp"),
            models.Index(
                fields=["brand", "telegram_chat_id"],
                condition=Q(telegram_chat_id__isnull=False),
                name="contact_brand_telegram",
            ),
        ]

    def __str__(self) -> str:
        name = f"{self.first_name} {self.last_name}".strip()
        return name or self.email or self.phone or self.external_id or f"contact {self.pk}"

    def save(self, *args, **kwargs):
        if not self._state.adding and not kwargs.get("force_insert") and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                f.name for f in self._meta.concrete_fields if not f.primary_key and f.name not in CONSENT_COLUMNS
            ]
        super().save(*args, **kwargs)

    def address_for(self, channel: str) -> str | None:
        field = ADDRESS_FIELD.get(channel)
        return getattr(self, field) if field else None


class Consent(models.Model):
    """The current consent of a contact on a channel; its history is in ``ConsentEvent``."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="consents")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    status = models.CharField(max_length=16, choices=ConsentStatus.choices)
    source = models.CharField(max_length=200)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["contact", "channel"], name="consent_one_per_channel")]
        indexes = [models.Index(fields=["channel", "status", "contact"], name="consent_channel_status")]

    def __str__(self) -> str:
        return f"{self.channel}: {self.status}"


class ConsentEvent(models.Model):
    """Append-only: every consent change with its source and actor (GDPR/TCPA audit trail)."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="consent_events")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    status = models.CharField(max_length=16, choices=ConsentStatus.choices)
    source = models.CharField(max_length=200, help_text="import:<file>, api, admin, form, keyword STOP, ...")
    actor = models.CharField(max_length=150, blank=True, help_text="User, API key or provider that made the change.")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.channel} → {self.status} ({self.source})"


class Suppression(models.Model):
    """An address that must never be sent to on a channel, whatever its consent says."""

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="suppressions")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    address = models.CharField(max_length=254)
    reason = models.CharField(max_length=16, choices=SuppressionReason.choices)
    source = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["brand", "channel", "address", "reason"], name="suppression_unique")
        ]
        indexes = [models.Index(fields=["brand", "channel", "address"], name="suppression_lookup")]

    def __str__(self) -> str:
        return f"{self.channel}:{self.address} ({self.get_reason_display()})"


class ContactList(models.Model):
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="contact_lists")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    contacts = models.ManyToManyField(Contact, through="ListMembership", related_name="lists", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["brand", "name"], name="contact_list_unique_name")]

    def __str__(self) -> str:
        return self.name


class ListMembership(models.Model):
    contact_list = models.ForeignKey(ContactList, on_delete=models.CASCADE, related_name="memberships")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="memberships")
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["contact_list", "contact"], name="list_membership_unique")]
        indexes = [models.Index(fields=["contact", "contact_list"], name="membership_contact")]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.contact_list_id}"


def everyone() -> dict:
    return {"and": []}


class Segment(models.Model):
    """A saved rule tree (see ``audiences.segments``) evaluated whenever it is used."""

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="segments")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    rules = models.JSONField(
        default=everyone, help_text='e.g. {"and": [{"field": "attributes.tier", "op": "equals", "value": "premium"}]}'
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["brand", "name"], name="segment_unique_name")]

    def __str__(self) -> str:
        return self.name


class ContactImport(models.Model):
    """A CSV upload and the background job that loads it: progress, summary and error report."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed (file rejected)"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="contact_imports")
    file = models.FileField(upload_to="imports/%Y/%m/")
    original_name = models.CharField(max_length=255, blank=True)
    target_list = models.ForeignKey(ContactList, on_delete=models.SET_NULL, null=True, blank=True)
    consent_channel = models.CharField(
        max_length=16,
        choices=Channel.choices,
        blank=True,
        help_text="Record consent on this channel for every imported contact (only if they agreed to it).",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    total_rows = models.PositiveIntegerField(null=True, blank=True)
    rows_done = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)
    error_report = models.FileField(upload_to="imports/errors/%Y/%m/", blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.original_name or f"import {self.pk}"
