from django.contrib import admin, messages
from django.utils import timezone

from .admin_mixins import BrandScopedModelAdmin, _is_superuser
from .models import ApiKey, Brand, Membership
from .services import api_key_create


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]

    # Users are global accounts: only superusers hand out memberships, brand Admins see them.
    def has_add_permission(self, request, obj=None):
        return _is_superuser(request)

    def has_change_permission(self, request, obj=None):
        return _is_superuser(request)

    def has_delete_permission(self, request, obj=None):
        return _is_superuser(request)

    def has_view_permission(self, request, obj=None):
        return True


@admin.register(Brand)
class BrandAdmin(BrandScopedModelAdmin):
    brand_field = "id"
    list_display = ["name", "slug", "default_locale", "time_zone", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]
    fieldsets = [
        (None, {"fields": ["name", "slug"]}),
        ("Sending", {"fields": ["sender_name", "default_locale", "default_region", "time_zone", "sms_opt_out_suffix"]}),
        ("Quiet hours (SMS and WhatsApp)", {"fields": ["quiet_hours_start", "quiet_hours_end"]}),
        (
            "Look and legal",
            {
                "fields": [
                    "logo_url",
                    "primary_colour",
                    "secondary_colour",
                    "email_header_html",
                    "email_footer_html",
                    "legal_address",
                ]
            },
        ),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [] if _is_superuser(request) or obj is None else ["slug"]


@admin.register(ApiKey)
class ApiKeyAdmin(BrandScopedModelAdmin):
    list_display = ["name", "brand", "role", "prefix", "created_at", "last_used_at", "status"]
    list_filter = ["role", "brand"]
    search_fields = ["name", "prefix"]
    fields = ["brand", "name", "role", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    @admin.display(description="status")
    def status(self, obj):
        return "active" if obj.is_active else "revoked"

    def get_readonly_fields(self, request, obj=None):
        # A key's brand and role are fixed once issued: issue a new key instead.
        return self.readonly_fields + (["brand", "role"] if obj else [])

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, plaintext = api_key_create(brand=obj.brand, name=obj.name, role=obj.role, created_by=request.user)
        obj.pk = key.pk
        obj.__dict__.update({field: getattr(key, field) for field in ("prefix", "key_hash", "created_at")})
        obj._state.adding = False
        messages.warning(request, f"API key {key.name}: {plaintext} — copy it now, it will not be shown again.")

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request, queryset):
        count = self.allowed(request, queryset).filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} API key(s).")
