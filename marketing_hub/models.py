"""The tenant (Brand), who may act for it (Membership) and how integrations do (ApiKey)."""

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from .roles import Role

hex_colour = RegexValidator(r"^#[0-9a-fA-F]{6}$", "Enter a colour as #RRGGBB.")


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin).")


class Brand(models.Model):
    """A client brand: the tenant every other object belongs to, with its guidelines."""

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    sender_name = models.CharField(
        max_length=100, blank=True, help_text="Display name on emails and sender identities."
    )
    default_locale = models.CharField(max_length=10, default="en")
    default_region = models.CharField(
        max_length=2, default="US", help_text="ISO country code used to read phone numbers without +."
    )
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    quiet_hours_start = models.TimeField(
        null=True, blank=True, help_text="SMS and WhatsApp are never delivered from this local time..."
    )
    quiet_hours_end = models.TimeField(null=True, blank=True, help_text="...until this local time.")
    email_header_html = models.TextField(blank=True)
    email_footer_html = models.TextField(blank=True)
    logo_url = models.URLField(blank=True)
    primary_colour = models.CharField(max_length=7, default="#1F4E79", validators=[hex_colour])
    secondary_colour = models.CharField(max_length=7, default="#F2F2F2", validators=[hex_colour])
    legal_address = models.TextField(blank=True, help_text="Postal address printed in every email (CAN-SPAM).")
    sms_opt_out_suffix = models.CharField(max_length=60, default="Reply STOP to opt out")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("export_data", "Can export data")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if (self.quiet_hours_start is None) != (self.quiet_hours_end is None):
            raise ValidationError({"quiet_hours_end": "Set both ends of the quiet hours, or neither."})


class Membership(models.Model):
    """A user's role in one brand. A user may hold different roles in different brands."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MARKETER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "brand"], name="membership_unique_user_brand")]

    def __str__(self) -> str:
        return f"{self.user} — {self.get_role_display()} of {self.brand}"


class ApiKey(models.Model):
    """A brand's API key. The secret is shown once at creation and stored only as a hash."""

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    role = models.CharField(
        max_length=20, choices=Role.choices, default=Role.MARKETER, help_text="What the key may do in its brand."
    )
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
