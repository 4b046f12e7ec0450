import json

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from marketing_hub.admin_mixins import BrandScopedModelAdmin

from . import services
from .admin_import import ContactImportExportMixin  # also registers ContactImportAdmin
from .models import Consent, ConsentEvent, Contact, ContactList, ListMembership, Segment, Suppression
from .normalize import clean_contact_fields
from .segments import RuleError, compile_rules
from .services import segment_members

PREVIEW_SIZE = 50


class ConsentInline(admin.TabularInline):
    model = Consent
    extra = 0
    fields = ["channel", "status", "source", "updated_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False  # consent changes go through actions, so the history is always written


class ConsentEventInline(admin.TabularInline):
    model = ConsentEvent
    extra = 0
    fields = ["created_at", "channel", "status", "source", "actor"]
    readonly_fields = fields
    can_delete = False
    verbose_name_plural = "consent history (append-only)"

    def has_add_permission(self, request, obj=None):
        return False


class ContactForm(forms.ModelForm):
    class Meta:
        model = Contact
        fields = [
            "brand", "external_id", "first_name", "last_name", "email", "phone", "whatsapp", "telegram_chat_id",
            "locale", "country", "time_zone", "attributes",
        ]  # fmt: skip

    def clean(self):
        data = super().clean()
        brand = data.get("brand")
        fields = ("email", "phone", "whatsapp", "time_zone", "country", "external_id", "telegram_chat_id")
        raw = {field: data.get(field) or "" for field in fields if field in data}
        values, errors = clean_contact_fields(raw, brand.default_region if brand else "")
        for field, message in errors.items():
            self.add_error(field, message)
        for field, value in values.items():
            if field not in errors:
                data[field] = value
        if not data.get("whatsapp") and data.get("phone"):
            data["whatsapp"] = data["phone"]
        return data

    def _post_clean(self):
        super()._post_clean()
        # Partial unique constraints are checked by validate_constraints(); name the field.
        for field in ("email", "phone", "external_id"):
            if any("contact_unique_" + field in str(e) for e in self.errors.get("__all__", [])):
                self.add_error(field, f"Another contact of this brand already has this {field.replace('_', ' ')}.")


class ListMembershipInline(admin.TabularInline):
    model = ListMembership
    extra = 0
    fields = ["contact_list", "added_at"]
    readonly_fields = ["added_at"]


@admin.register(Contact)
class ContactAdmin(ContactImportExportMixin, BrandScopedModelAdmin):
    form = ContactForm
    list_display = ["__str__", "email", "phone", "country", "locale", "brand", "created_at"]
    list_filter = ["brand", "country", "locale", "consent_email", "consent_sms", "consent_whatsapp", "consent_telegram"]
    search_fields = ["email", "phone", "external_id", "first_name", "last_name"]
    readonly_fields = ["erased_at", "created_at", "updated_at"]
    inlines = [ListMembershipInline, ConsentInline, ConsentEventInline]
    actions = ["export_gdpr", "erase", "subscribe_email", "unsubscribe_all"]
    list_per_page = 50
    show_full_result_count = False  # counting a million rows on every page view is wasted time
    fieldsets = [
        (None, {"fields": ["brand", "external_id", "first_name", "last_name"]}),
        ("Addresses", {"fields": ["email", "phone", "whatsapp", "telegram_chat_id"]}),
        ("Locale", {"fields": ["locale", "country", "time_zone"]}),
        ("Attributes", {"fields": ["attributes"]}),
        ("Record", {"fields": ["erased_at", "created_at", "updated_at"]}),
    ]

    def _actor(self, request) -> str:
        return f"admin:{request.user.get_username()}"

    @admin.action(description="Export selected contacts' data (GDPR, JSON)", permissions=["view"])
    def export_gdpr(self, request, queryset):
        data = [services.contact_export(contact) for contact in self.allowed(request, queryset, "view")]
        response = HttpResponse(json.dumps(data, indent=2, default=str), content_type="application/json")
        response["Content-Disposition"] = 'attachment; filename="contacts-gdpr-export.json"'
        return response

    @admin.action(description="Erase selected contacts (GDPR: PII removed, never re-imported)", permissions=["delete"])
    def erase(self, request, queryset):
        count = 0
        for contact in self.allowed(request, queryset, "delete").filter(erased_at__isnull=True):
            services.contact_erase(contact, actor=self._actor(request))
            count += 1
        self.message_user(request, f"Erased {count} contact(s); their addresses are suppressed as 'erased'.")

    @admin.action(description="Record email consent (they agreed, e.g. on a paper form)", permissions=["change"])
    def subscribe_email(self, request, queryset):
        contacts = self.allowed(request, queryset).filter(email__isnull=False)
        changed = services.consent_bulk_subscribe(
            contacts.values_list("pk", flat=True), "email", "admin", self._actor(request)
        )
        self.message_user(request, f"Recorded email consent for {changed} contact(s).")

    @admin.action(description="Unsubscribe from every channel", permissions=["change"])
    def unsubscribe_all(self, request, queryset):
        count = 0
        for contact in self.allowed(request, queryset):
            for channel in ("email", "sms", "whatsapp", "telegram"):
                if contact.address_for(channel):
                    services.unsubscribe(contact, channel, "admin", self._actor(request))
            count += 1
        self.message_user(request, f"Unsubscribed {count} contact(s) on every channel they have an address for.")


@admin.register(Suppression)
class SuppressionAdmin(BrandScopedModelAdmin):
    list_display = ["address", "channel", "reason", "source", "brand", "created_at"]
    list_filter = ["brand", "channel", "reason"]
    search_fields = ["address"]
    readonly_fields = ["created_at"]


@admin.register(ContactList)
class ContactListAdmin(BrandScopedModelAdmin):
    list_display = ["name", "brand", "size", "created_at"]
    list_filter = ["brand"]
    search_fields = ["name"]
    exclude = ["contacts"]

    @admin.display(description="contacts")
    def size(self, obj):
        return obj.memberships.count()


class SegmentForm(forms.ModelForm):
    class Meta:
        model = Segment
        fields = ["brand", "name", "description", "rules"]

    def clean_rules(self):
        rules = self.cleaned_data["rules"]
        try:
            compile_rules(rules)
        except RuleError as exc:
            raise forms.ValidationError(f"Rule at {exc.path}: {exc.message}") from None
        return rules


@admin.register(Segment)
class SegmentAdmin(BrandScopedModelAdmin):
    form = SegmentForm
    list_display = ["name", "brand", "updated_at", "preview_link"]
    list_filter = ["brand"]
    search_fields = ["name"]

    def get_urls(self):
        preview = self.admin_site.admin_view(self.preview_view)
        return [path("<int:pk>/preview/", preview, name="audiences_segment_preview"), *super().get_urls()]

    @admin.display(description="members")
    def preview_link(self, obj):
        return format_html(
            '<a href="{}">estimate and preview</a>', reverse("admin:audiences_segment_preview", args=[obj.pk])
        )

    def preview_view(self, request, pk):
        segment = self.get_object(request, str(pk))
        if segment is None or not self.has_view_permission(request, segment):
            from django.http import Http404

            raise Http404("No segment with this id.")
        try:
            members = segment_members(segment)
            count = members.count()
            sample = list(members[:PREVIEW_SIZE])
        except RuleError as exc:
            messages.error(request, f"Rule at {exc.path}: {exc.message}")
            count, sample = None, []
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "segment": segment,
            "count": count,
            "sample": sample,
            "title": f"Segment “{segment}”: {count if count is not None else '?'} contacts",
        }
        return TemplateResponse(request, "admin/audiences/segment_preview.html", context)
