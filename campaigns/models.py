"""Templates: content written once per brand, with per-channel parts and translations."""

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
        if (
            template is not None
            and template.purpose == TemplatePurpose.MARKETING
            and not template.use_brand_layout
            and self.email_html
            and not uses_variable(self.email_html, UNSUBSCRIBE_VARIABLE)
        ):
            errors.setdefault("email_html", []).append(
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
