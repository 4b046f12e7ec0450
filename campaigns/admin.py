from django.contrib import admin, messages

from marketing_hub.admin_mixins import BrandScopedModelAdmin

from .models import MessageTemplate, TemplateContent


class TemplateContentInline(admin.StackedInline):
    model = TemplateContent
    extra = 0
    min_num = 1
    fieldsets = [
        (None, {"fields": ["locale"]}),
        ("Email", {"fields": ["email_subject", "email_preheader", "email_html", "email_text"]}),
        ("SMS", {"fields": ["sms_text"]}),
        ("WhatsApp", {"fields": ["whatsapp_content_sid", "whatsapp_variables", "whatsapp_text"]}),
        ("Telegram", {"fields": ["telegram_text", "telegram_button_text", "telegram_button_url"]}),
    ]


@admin.register(MessageTemplate)
class MessageTemplateAdmin(BrandScopedModelAdmin):
    list_display = ["name", "brand", "purpose", "locales", "updated_at"]
    list_filter = ["purpose", "brand"]
    search_fields = ["name"]
    inlines = [TemplateContentInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("contents")

    @admin.display(description="locales")
    def locales(self, obj):
        return ", ".join(content.locale for content in obj.contents.all())

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        for content in form.instance.contents.all():
            for warning in content.warnings():
                messages.warning(request, f"[{content.locale}] {warning}")
