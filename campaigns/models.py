"""Templates (content written once, per channel and locale), campaigns, their sends and messages."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from marketing_hub.models import Brand

from .templating import UNSUBSCRIBE_VARIABLE, check_template, uses_variable


class TemplatePurpose(models.TextChoices):
    MARKETING = "marketing", "Marketing"
    TRANSACTIONAL = "transactional", "Transactional"


class MessageTemplate(models.Model):
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="templates")
    name = models.CharField(max_length=150)
    purpose = models.CharField(max_length=20, choices=TemplatePurpose.choices, default=TemplatePurpose.MARKETING)
    use_brand_layout = models.BooleanField(
        default=True,
        help_text="Wrap emails in the brand's header and footer (postal address and unsubscribe link included).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["brand", "name"], name="template_unique_brand_name")]

    def __str__(self) -> str:
        return self.name


# Fields of TemplateContent that are Jinja2 templates, and whether they render as HTML.
TEMPLATE_FIELDS = {
    "email_subject": False,
    "email_preheader": False,
    "email_html": True,
    "email_text": False,
    "sms_text": False,
    "whatsapp_text": False,
    "telegram_text": True,
    "telegram_button_text": False,
    "telegram_button_url": False,
}


class TemplateContent(models.Model):
    """One locale's content of a template, for every channel. The brand's default locale is the fallback."""

    template = models.ForeignKey(MessageTemplate, on_delete=models.CASCADE, related_name="contents")
    locale = models.CharField(max_length=10, help_text="e.g. en, de, pt-BR")
    email_subject = models.CharField(max_length=255, blank=True)
    email_preheader = models.CharField(max_length=255, blank=True)
    email_html = models.TextField(blank=True)
    email_text = models.TextField(blank=True, help_text="Derived from the HTML when empty.")
    sms_text = models.TextField(blank=True)
    whatsapp_content_sid = models.CharField(
        max_length=64,
        blank=True,
        help_text="Approved WhatsApp Content template (HX…), for business-initiated messages.",
    )
    whatsapp_variables = models.JSONField(
        default=dict, blank=True, help_text='Template variable → expression, e.g. {"1": "{{ contact.first_name }}"}'
    )
    whatsapp_text = models.TextField(blank=True, help_text="Free text: only inside the 24 h session window.")
    telegram_text = models.TextField(blank=True, help_text="HTML parse mode.")
    telegram_button_text = models.CharField(max_length=64, blank=True)
    telegram_button_url = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["template", "locale"]
        constraints = [models.UniqueConstraint(fields=["template", "locale"], name="template_content_unique_locale")]

    def __str__(self) -> str:
        return f"{self.template} [{self.locale}]"

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        for name in TEMPLATE_FIELDS:
            for error in check_template(getattr(self, name), field_name=name).errors:
                errors.setdefault(name, []).append(str(error))
        if not isinstance(self.whatsapp_variables, dict):
            errors.setdefault("whatsapp_variables", []).append("Must be an object of variable → expression.")
        else:
            for key, expression in self.whatsapp_variables.items():
                for error in check_template(str(expression), field_name=f"whatsapp_variables.{key}").errors:
                    errors.setdefault("whatsapp_variables", []).append(str(error))
        template = getattr(self, "template", None)
        if template is not None and template.purpose == TemplatePurpose.MARKETING and not template.use_brand_layout:
            # Each part a recipient may read: an HTML part, and a text part written by hand (one
            # derived from the HTML keeps its link). A text-only email is checked like an HTML one.
            for name in ("email_html", "email_text"):
                source = getattr(self, name)
                if source and not uses_variable(source, UNSUBSCRIBE_VARIABLE):
                    errors.setdefault(name, []).append(
                        "A marketing email without the brand layout must contain {{ unsubscribe_url }}."
                    )
        if bool(self.telegram_button_text) != bool(self.telegram_button_url):
            errors.setdefault("telegram_button_url", []).append("A button needs both its text and its URL.")
        if errors:
            raise ValidationError(errors)

    def warnings(self) -> list[str]:
        found: list[str] = []
        for name in TEMPLATE_FIELDS:
            found.extend(check_template(getattr(self, name), field_name=name).warnings)
        return found


# -- campaigns ------------------------------------------------------------------------------------------
class CampaignStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SCHEDULED = "scheduled", "Scheduled"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_STATUSES = {CampaignStatus.COMPLETED, CampaignStatus.CANCELLED}


class ChannelMode(models.TextChoices):
    FIRST_REACHABLE = "first_reachable", "First reachable channel"
    FAILOVER = "failover", "Next channel when one fails permanently"
    EVERY_CHANNEL = "every_channel", "Every reachable channel"


class ScheduleKind(models.TextChoices):
    NOW = "now", "Now (at launch)"
    AT = "at", "At a set time"
    RECURRING = "recurring", "Recurring (crontab)"
    LOCAL_TIME = "local_time", "At a time of day in each contact's time zone"


class Campaign(models.Model):
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="campaigns")
    name = models.CharField(max_length=150)
    goal = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=12, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT)
    # audience
    segments = models.ManyToManyField("audiences.Segment", blank=True, related_name="campaigns")
    lists = models.ManyToManyField("audiences.ContactList", blank=True, related_name="campaigns")
    exclude_segments = models.ManyToManyField("audiences.Segment", blank=True, related_name="+")
    exclude_lists = models.ManyToManyField("audiences.ContactList", blank=True, related_name="+")
    # channels and content
    channel_mode = models.CharField(max_length=20, choices=ChannelMode.choices, default=ChannelMode.FIRST_REACHABLE)
    ab_test_share = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Percent of the audience that gets the A/B test first; the rest later gets the winner.",
    )
    # schedule
    schedule_kind = models.CharField(max_length=12, choices=ScheduleKind.choices, default=ScheduleKind.NOW)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    local_time = models.TimeField(null=True, blank=True, help_text="For 'local time': the contact's local time of day.")
    crontab = models.CharField(
        max_length=100, blank=True, help_text="For 'recurring': minute hour day-of-month month day-of-week (UTC)."
    )
    # limits
    priority = models.PositiveSmallIntegerField(default=5, help_text="1 (lowest) to 10 (highest).")
    frequency_cap = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="At most this many marketing messages per contact per channel in 7 days."
    )
    budget_cap = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    daily_cap = models.PositiveIntegerField(null=True, blank=True, help_text="At most this many messages a day.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    launched_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(priority__gte=1, priority__lte=10), name="campaign_priority_1_to_10"
            ),
        ]
        permissions = [("launch_campaign", "Can launch, pause, resume and cancel campaigns")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if self.schedule_kind == ScheduleKind.AT and not self.scheduled_at:
            errors["scheduled_at"] = "Set the time to send at."
        if self.schedule_kind == ScheduleKind.LOCAL_TIME and not self.local_time:
            errors["local_time"] = "Set the local time of day."
        if self.schedule_kind == ScheduleKind.RECURRING:
            from .scheduling import crontab_error

            problem = crontab_error(self.crontab)
            if problem:
                errors["crontab"] = problem
        if self.ab_test_share is not None and not 1 <= self.ab_test_share <= 99:
            errors["ab_test_share"] = "A test share is a percentage between 1 and 99."
        if errors:
            raise ValidationError(errors)


class CampaignChannel(models.Model):
    """One step of the channel strategy: this channel, through this account, with this template."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="channels")
    position = models.PositiveSmallIntegerField(default=0)
    account = models.ForeignKey("channels.ChannelAccount", on_delete=models.PROTECT, related_name="+")
    template = models.ForeignKey(MessageTemplate, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["campaign", "position"], name="campaign_channel_position")]

    def __str__(self) -> str:
        return f"{self.position + 1}. {self.account}"

    @property
    def channel(self) -> str:
        return self.account.channel


class Variant(models.Model):
    """An A/B variant: its share of the audience and, optionally, its own template."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=40)
    weight = models.PositiveSmallIntegerField(default=50)
    template = models.ForeignKey(
        MessageTemplate, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        help_text="Leave empty to use each channel's template.",
    )  # fmt: skip
    is_winner = models.BooleanField(default=False)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["campaign", "name"], name="variant_unique_name")]

    def __str__(self) -> str:
        return self.name


class CampaignTransition(models.Model):
    """Every status change, by whom and when (append-only)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="transitions")
    from_status = models.CharField(max_length=12, choices=CampaignStatus.choices)
    to_status = models.CharField(max_length=12, choices=CampaignStatus.choices)
    actor = models.CharField(max_length=150, blank=True)
    note = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.from_status} → {self.to_status}"


class Send(models.Model):
    """One occurrence of a campaign (one for one-off campaigns, one per run for recurring ones)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="sends")
    occurrence = models.CharField(max_length=40, help_text="'once', or the occurrence's UTC time for recurring.")
    phase = models.CharField(max_length=10, default="all", help_text="all, or test / rest for an A/B test share.")
    targeted = models.PositiveIntegerField(default=0)
    planned_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "occurrence", "phase"], name="send_unique_occurrence")
        ]

    def __str__(self) -> str:
        return f"{self.campaign} / {self.occurrence}"


class MessageStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # planned, waiting for send_after and capacity
    QUEUED = "queued", "Queued"  # claimed by the dispatcher, a send task is on its way
    SENDING = "sending", "Sending"  # handed to the provider call: never sent again blindly
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"
    UNKNOWN = "unknown", "Unknown (worker lost during the provider call)"


OPEN_STATUSES = (MessageStatus.PENDING, MessageStatus.QUEUED, MessageStatus.SENDING)
COUNTED_AS_SENT = (MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.UNKNOWN)


class SkipReason(models.TextChoices):
    NO_ADDRESS = "no_address", "No address on any channel"
    NO_CONSENT = "no_consent", "No consent"
    SUPPRESSED = "suppressed", "Suppressed"
    FREQUENCY_CAP = "frequency_cap", "Frequency cap reached"
    BUDGET = "budget", "Budget cap reached"
    RENDER_ERROR = "render_error", "Template could not be rendered"


def _unchecked(to, on_delete, **options) -> models.ForeignKey:
    """A relation Django keeps (``on_delete`` applies when Django deletes) that the database neither
    indexes nor checks: see ``Message``."""
    return models.ForeignKey(to, on_delete=on_delete, db_index=False, db_constraint=False, **options)


class Message(models.Model):
    """One message to one contact on one channel: planned, claimed, sent and tracked."""

    # A launch writes a row per contact, and every row pays for each index and each foreign-key check:
    # - campaign and contact are served by the leading column of message_campaign_status and
    #   message_once_per_send (which, led by the contact, also serves the frequency cap, GDPR and the
    #   contact delete cascade), variant by a partial index; a send's messages are read with their
    #   campaign; brand, account and template have none (deleting a brand, account, template or send,
    #   rare admin acts, scans instead);
    # - no foreign key is a database constraint (``db_constraint=False``): PostgreSQL checks each with a
    #   trigger per row, 7 lookups per message, two thirds of planning 1M recipients. Django still
    #   applies on_delete (CASCADE, PROTECT, SET_NULL) when it deletes; the planner locks the launch's
    #   constant rows (send, campaign, brand, accounts, templates, variants) while it writes, and the
    #   sender cancels a message whose contact was deleted during planning (see ``sender._claim``).
    brand = _unchecked(Brand, models.CASCADE, related_name="+")
    campaign = _unchecked(Campaign, models.CASCADE, null=True, blank=True, related_name="messages")
    send = _unchecked(Send, models.CASCADE, null=True, blank=True, related_name="messages")
    contact = _unchecked("audiences.Contact", models.CASCADE, related_name="messages")
    variant = _unchecked(Variant, models.SET_NULL, null=True, blank=True, related_name="+")
    channel = models.CharField(max_length=16, blank=True)
    step = models.PositiveSmallIntegerField(default=0, help_text="Position in the campaign's channel strategy.")
    account = _unchecked("channels.ChannelAccount", models.PROTECT, null=True, blank=True, related_name="+")
    template = _unchecked(MessageTemplate, models.PROTECT, null=True, blank=True, related_name="+")
    marketing = models.BooleanField(default=True)
    priority = models.PositiveSmallIntegerField(default=5)
    status = models.CharField(max_length=10, choices=MessageStatus.choices, default=MessageStatus.PENDING)
    skip_reason = models.CharField(max_length=16, choices=SkipReason.choices, blank=True)
    send_after = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    address = models.CharField(max_length=254, blank=True)
    provider_message_id = models.CharField(max_length=100, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    segments = models.PositiveSmallIntegerField(default=0)
    cost = models.DecimalField(max_digits=10, decimal_places=5, default=0)
    idempotency_key = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001 - partial unique
    context = models.JSONField(default=dict, blank=True, help_text="Extra template variables (transactional).")
    queued_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # The planner's guarantee: one message per contact per send per channel.
            models.UniqueConstraint(fields=["contact", "send", "channel"], name="message_once_per_send"),
            models.UniqueConstraint(
                fields=["brand", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="message_idempotency_key",
            ),
        ]
        indexes = [
            # The dispatcher's claim: an account's pending messages in the order it takes them
            # (-priority, id). In (priority, id) the index gave neither order; the claim read and sorted
            # every pending row of the account, each round (0.85 s at 76,000 pending).
            models.Index(
                fields=["account", "-priority", "id"],
                condition=models.Q(status="pending"),
                name="message_claim_order",
            ),
            models.Index(fields=["campaign", "status"], name="message_campaign_status"),
            # The reconciler's look for stale in-flight messages (beat, every minute): a handful of rows
            # at any time, found without scanning the table; planned rows are pending and never enter it.
            models.Index(
                fields=["status", "updated_at"],
                condition=models.Q(status__in=["queued", "sending"]),
                name="message_in_flight",
            ),
            # Webhooks look messages up by a provider id; planned messages have none yet.
            models.Index(
                fields=["provider_message_id"], condition=~models.Q(provider_message_id=""), name="message_provider_id"
            ),
            models.Index(fields=["variant"], condition=models.Q(variant__isnull=False), name="message_variant"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.contact_id} ({self.status})"
