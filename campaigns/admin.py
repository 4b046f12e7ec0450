import json
import time

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.views.main import ChangeList
from django.db.models import Count
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timezone import localtime

from channels.sms import GSM7_BASIC, GSM7_EXTENSION, sms_segments
from marketing_hub.admin_mixins import BrandScopedModelAdmin
from marketing_hub.tenancy import brands_for_user

from . import planner, services
from .models import (
    OPEN_STATUSES,
    Campaign,
    CampaignChannel,
    CampaignTransition,
    Message,
    MessageTemplate,
    TemplateContent,
    Variant,
)
from .planner import PlanningError
from .templating import SMS_TRACKED_URL, SMS_VARIABLE_WIDTH, sms_estimate_text


class TemplateContentInline(admin.StackedInline):
    model = TemplateContent
    extra = 0
    min_num = 1

    class Media:
        js = ["campaigns/sms_counter.js"]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "sms_text":
            field.widget.attrs["data-sms-config"] = json.dumps(_sms_counter_config(request))
        return field

    fieldsets = [
        (None, {"fields": ["locale"]}),
        ("Email", {"fields": ["email_subject", "email_preheader", "email_html", "email_text"]}),
        ("SMS", {"fields": ["sms_text"]}),
        ("WhatsApp", {"fields": ["whatsapp_content_sid", "whatsapp_variables", "whatsapp_text"]}),
        ("Telegram", {"fields": ["telegram_text", "telegram_button_text", "telegram_button_url"]}),
    ]


def _sms_counter_config(request) -> dict:
    """What the live SMS counter needs: the GSM-7 sets, the width of a variable and the opt-out suffix
    of each brand the user may pick (the same rules as ``sms_estimate_text``)."""
    return {
        "basic": "".join(sorted(GSM7_BASIC)),
        "extension": "".join(sorted(GSM7_EXTENSION)),
        "variableWidth": SMS_VARIABLE_WIDTH,
        "trackedUrl": SMS_TRACKED_URL,
        "baseLength": len(settings.PUBLIC_BASE_URL),
        "suffixes": {
            str(pk): suffix for pk, suffix in brands_for_user(request.user).values_list("pk", "sms_opt_out_suffix")
        },
    }


@admin.register(MessageTemplate)
class MessageTemplateAdmin(BrandScopedModelAdmin):
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
            if content.sms_text:
                encoding, segments = sms_segments(sms_estimate_text(content.sms_text, brand=form.instance.brand))
                if encoding != "GSM-7" or segments > 1:
                    messages.warning(
                        request,
                        f"[{content.locale}] SMS: {encoding}, about {segments} segment(s) per message with the "
                        "opt-out suffix (each segment is billed).",
                    )

    list_display = ["name", "brand", "purpose", "locales", "updated_at", "preview_link"]

    @admin.display(description="preview")
    def preview_link(self, obj):
        return format_html(
            '<a href="{}">preview / send a test</a>', reverse("admin:campaigns_template_preview", args=[obj.pk])
        )

    def get_urls(self):
        view = self.admin_site.admin_view(self.preview_view)
        return [path("<int:pk>/preview/", view, name="campaigns_template_preview"), *super().get_urls()]

    def preview_view(self, request, pk):
        """Render the template for a chosen contact, channel and locale; optionally send it as a test."""
        from audiences.models import Contact
        from channels.models import ChannelAccount

        from .rendering import NoContentError, render_message
        from .templating import TemplateError

        template = self.get_object(request, str(pk))
        if template is None:
            raise Http404("No template with this id.")
        contacts = Contact.objects.filter(brand_id=template.brand_id, erased_at__isnull=True)
        accounts = ChannelAccount.objects.filter(brand_id=template.brand_id, is_active=True)
        data = request.POST if request.method == "POST" else request.GET
        contact = contacts.filter(pk=data.get("contact") or 0).first() or contacts.first()
        channel = data.get("channel") or "email"
        locale = data.get("locale") or None
        rendered, error, sms = None, "", None
        if contact is not None:
            try:
                links = {"unsubscribe_url": "https://example.invalid/u/preview/",
                         "preferences_url": "https://example.invalid/p/preview/"}  # fmt: skip
                rendered = render_message(template=template, channel=channel, contact=contact, links=links,
                                          locale=locale)  # fmt: skip
                if channel == "sms":
                    sms = sms_segments(rendered.text)
            except (NoContentError, TemplateError) as exc:
                error = str(exc)
        if request.method == "POST" and rendered is not None and self.has_change_permission(request, template):
            account = accounts.filter(pk=data.get("account") or 0, channel=channel).first()
            to = (data.get("to") or "").strip()
            if account is None or not to:
                messages.error(request, "Choose a sender account of this channel and an address to send the test to.")
            else:
                messages.info(request, send_test(account, rendered, to, template.brand.sender_name))
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "template": template,
            "title": f"Preview “{template}”", "contacts": contacts[:200], "contact": contact, "channel": channel,
            "channels": ["email", "sms", "whatsapp", "telegram"], "locale": locale or "",
            "locales": [c.locale for c in template.contents.all()], "rendered": rendered, "error": error,
            "sms": sms, "accounts": accounts.filter(channel=channel),
        }  # fmt: skip
        return TemplateResponse(request, "admin/campaigns/template_preview.html", context)


def send_test(account, rendered, to: str, from_name: str) -> str:
    """Send one rendered message through ``account`` now and say what happened (admin test sends)."""
    from channels.exceptions import ProviderError
    from channels.providers import OutboundMessage, get_adapter

    message = OutboundMessage(
        message_id=f"test-{int(time.time())}", to=to, body=rendered.text, subject=f"[TEST] {rendered.subject}",
        html=rendered.html, from_name=from_name, content_sid=rendered.content_sid or None,
        content_variables=rendered.content_variables, button=rendered.button,
    )  # fmt: skip
    try:
        (result,) = get_adapter(account.provider_config()).send([message])
    except (ProviderError, LookupError, ValueError) as exc:
        return f"Test to {to} not sent: {exc}"
    if result.accepted:
        return f"Test sent to {to} through {account} (provider id {result.provider_message_id})."
    return f"Test to {to} refused by {account.get_provider_display()}: {result.error} (code {result.error.code})."


class CampaignChannelInline(admin.TabularInline):
    model = CampaignChannel
    extra = 1
    fields = ["position", "account", "template"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        CampaignAdmin.scope_choices(request, field)
        return field


class VariantInline(admin.TabularInline):
    model = Variant
    extra = 0
    fields = ["name", "weight", "template", "is_winner"]
    readonly_fields = ["is_winner"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        CampaignAdmin.scope_choices(request, field)
        return field


class TransitionInline(admin.TabularInline):
    model = CampaignTransition
    extra = 0
    fields = ["created_at", "from_status", "to_status", "actor", "note"]
    readonly_fields = fields
    can_delete = False
    verbose_name_plural = "history"

    def has_add_permission(self, request, obj=None):
        return False


def _bar(percent: float) -> str:
    return format_html(
        '<div class="mh-progress" title="{}%" style="width:140px;background:#eee;border-radius:3px">'
        '<div class="mh-progress-bar" data-percent="{}" style="width:{}%;background:#417690;height:10px;'
        'border-radius:3px"></div></div>',
        percent, percent, percent,
    )  # fmt: skip


def _eta(seconds: int) -> str:
    if not seconds:
        return "—"
    if seconds >= 86400:
        return f"{-(-seconds // 86400)} days"
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s"


def dry_run_text(data: dict) -> str:
    """A dry run in one line: recipients by channel, skipped by reason, quiet hours defer, cost, ETA."""

    def counts(by_name: dict) -> str:
        return ", ".join(f"{name} {n}" for name, n in sorted(by_name.items())) or "none"

    text = f"{data['targeted']} targeted; recipients: {counts(data['recipients_by_channel'])}"
    text += f"; skipped: {counts(data['skipped_by_reason'])}"
    if data.get("deferred_by_quiet_hours"):
        text += f"; quiet hours defer (still recipients, sent when they end): {counts(data['deferred_by_quiet_hours'])}"
    text += f"; estimated cost {data['estimated_cost']} {data['currency']}; ETA {_eta(data['eta_seconds'])}"
    return "".join([text, *(f". Warning: {warning}" for warning in data.get("warnings", []))])


class CampaignChangeList(ChangeList):
    """The campaign list with each shown campaign's message counts, read for that page only.

    Counting in the list's own query (an annotation) joined every campaign to all its messages before
    the page was cut: the whole message table on every visit. Here one grouped query reads the
    ``(campaign, status)`` index for the campaigns on the page."""

    def get_results(self, request):
        super().get_results(request)
        counts = (
            Message.objects.filter(campaign_id__in=[c.pk for c in self.result_list])
            .order_by()
            .values("campaign_id", "status")
            .annotate(n=Count("id"))
        )
        totals: dict[int, list[int]] = {}
        for row in counts:
            total = totals.setdefault(row["campaign_id"], [0, 0])
            total[0] += row["n"]
            total[1] += row["n"] if row["status"] in OPEN_STATUSES else 0
        for campaign in self.result_list:
            campaign._total, campaign._open = totals.get(campaign.pk, (0, 0))


@admin.register(Campaign)
class CampaignAdmin(BrandScopedModelAdmin):
    list_display = ["name", "brand", "status", "priority", "progress_bar", "eta", "launched_at"]
    list_filter = ["status", "brand", "channel_mode", "schedule_kind"]
    search_fields = ["name"]
    inlines = [CampaignChannelInline, VariantInline, TransitionInline]
    filter_horizontal = ["segments", "lists", "exclude_segments", "exclude_lists"]
    readonly_fields = ["status", "launched_at", "completed_at", "progress_detail"]
    actions = ["dry_run", "launch", "pause", "resume", "cancel", "duplicate", "delete_selected"]
    fieldsets = [
        (None, {"fields": ["brand", "name", "goal", "status", "progress_detail"]}),
        ("Audience", {"fields": ["segments", "lists", "exclude_segments", "exclude_lists"]}),
        ("Channels", {"fields": ["channel_mode", "ab_test_share"]}),
        ("Schedule", {"fields": ["schedule_kind", "scheduled_at", "local_time", "crontab"]}),
        ("Limits", {"fields": ["priority", "frequency_cap", "budget_cap", "daily_cap"]}),
        ("Record", {"fields": ["launched_at", "completed_at"]}),
    ]

    @staticmethod
    def scope_choices(request, field):
        if field is not None and hasattr(field, "queryset") and not request.user.is_superuser:
            from marketing_hub.tenancy import brand_roles_for_user

            field.queryset = field.queryset.filter(brand_id__in=list(brand_roles_for_user(request.user)))

    def get_changelist(self, request, **kwargs):
        return CampaignChangeList

    def get_readonly_fields(self, request, obj=None):
        fields = list(self.readonly_fields)
        if obj is not None and obj.status != "draft":
            # Launched campaigns are a record: duplicate to change them.
            fields += [f.name for f in Campaign._meta.fields if f.name not in fields and f.editable and f.name != "id"]
        return fields

    @admin.display(description="progress")
    def progress_bar(self, obj):
        total = getattr(obj, "_total", 0)
        done = total - getattr(obj, "_open", 0)
        percent = round(100 * done / total, 1) if total else (100.0 if obj.status == "completed" else 0.0)
        return format_html("{} <small>{} / {}</small>", _bar(percent), done, total)

    @admin.display(description="ETA")
    def eta(self, obj):
        if not getattr(obj, "_open", 0):
            return "—"
        return _eta(services.progress(obj)["eta_seconds"])

    @admin.display(description="progress")
    def progress_detail(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        data = services.progress(obj)
        rows = "".join(
            format_html("<tr><td>{}</td><td>{}</td></tr>", status, count)
            for status, count in sorted(data["by_status"].items())
        )
        skipped = "".join(
            format_html("<tr><td>skipped: {}</td><td>{}</td></tr>", reason, count)
            for reason, count in sorted(data["skipped_by_reason"].items())
        )
        channels = "".join(
            format_html(
                "<tr><td>{}</td><td>{}</td></tr>", channel, ", ".join(f"{k}: {v}" for k, v in sorted(c.items()))
            )
            for channel, c in sorted(data["by_channel"].items())
        )
        errors = "".join(
            format_html(
                "<tr><td>{} {}</td><td>{}, last {}</td></tr>",
                e["provider"],
                e["code"],
                e["count"],
                date_format(localtime(e["last_seen"]), "SHORT_DATETIME_FORMAT"),
            )
            for e in data["recent_errors"]
        )
        return format_html(
            "{} <strong>{}%</strong> ({} of {}), ETA {}"
            '<table class="mh-counts"><tr><th colspan=2>By status</th></tr>{}{}'
            "<tr><th colspan=2>By channel</th></tr>{}<tr><th colspan=2>Errors by provider code (failed or retrying), latest first"
            "</th></tr>{}</table>",
            _bar(data["percent"]), data["percent"], data["done"], data["total"], _eta(data["eta_seconds"]),
            format_html(rows), format_html(skipped), format_html(channels), format_html(errors),
        )  # fmt: skip

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def has_delete_permission(self, request, obj=None):
        """No deleting a campaign that may still send (see ``services.deletion_refused``)."""
        if obj is not None and services.deletion_refused(obj):
            return False
        return super().has_delete_permission(request, obj)

    @admin.action(description="Delete selected campaigns", permissions=["delete"])
    def delete_selected(self, request, queryset):
        """Django's delete action for the selected campaigns that may be deleted; the live ones are
        named and left alone (Django's own would refuse the whole selection without saying why)."""
        live = queryset.filter(status__in=services.LIVE_STATUSES)
        for campaign in live:
            self.message_user(request, f"{campaign}: {services.deletion_refused(campaign)}", level=messages.ERROR)
        rest = queryset.exclude(status__in=services.LIVE_STATUSES)
        if not rest.exists():
            return None
        return delete_selected(self, request, rest)

    def delete_queryset(self, request, queryset):
        # Checked again when the confirmation comes back: a campaign launched meanwhile stays.
        for campaign in queryset:
            try:
                services.delete(campaign)
            except services.DeletionRefused as exc:
                self.message_user(request, f"{campaign}: {exc}", level=messages.ERROR)

    def delete_model(self, request, obj):
        services.delete(obj)

    def _each(self, request, queryset, func, verb):
        done = 0
        for campaign in self.allowed(request, queryset):
            try:
                func(campaign, f"admin:{request.user.get_username()}")
                done += 1
            except (services.IllegalTransition, PlanningError) as exc:
                self.message_user(request, f"{campaign}: {exc}", level=messages.ERROR)
        if done:
            self.message_user(request, f"{verb} {done} campaign(s).")

    @admin.action(description="Dry run selected campaigns", permissions=["view"])
    def dry_run(self, request, queryset):
        """What launching would do, as a message per campaign; nothing is written."""
        for campaign in self.allowed(request, queryset, "view"):
            try:
                self.message_user(request, f"{campaign}: {dry_run_text(planner.dry_run(campaign))}")
            except PlanningError as exc:
                self.message_user(request, f"{campaign}: {exc}", level=messages.ERROR)

    @admin.action(description="Launch selected campaigns", permissions=["change"])
    def launch(self, request, queryset):
        self._each(request, queryset, services.launch, "Launched")

    @admin.action(description="Pause selected campaigns", permissions=["change"])
    def pause(self, request, queryset):
        self._each(request, queryset, services.pause, "Paused")

    @admin.action(description="Resume selected campaigns", permissions=["change"])
    def resume(self, request, queryset):
        self._each(request, queryset, services.resume, "Resumed")

    @admin.action(description="Cancel selected campaigns", permissions=["change"])
    def cancel(self, request, queryset):
        self._each(request, queryset, services.cancel, "Cancelled")

    @admin.action(description="Duplicate selected campaigns", permissions=["add"])
    def duplicate(self, request, queryset):
        self._each(request, queryset, services.duplicate, "Duplicated")


@admin.register(Message)
class MessageAdmin(BrandScopedModelAdmin):
    list_display = ["id", "campaign", "contact", "channel", "status", "skip_reason", "error_code", "sent_at"]
    list_filter = ["status", "channel", "skip_reason", "brand"]
    search_fields = ["provider_message_id", "address"]
    list_select_related = ["campaign", "contact"]
    show_full_result_count = False
    readonly_fields = [f.name for f in Message._meta.fields]

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        return False
