"""Admin for CSV imports: upload, progress bar (rows, rate, ETA), summary and the error report.

Registered from the end of ``audiences/admin.py`` so this file and the main admin stay apart.
The upload only stores the file and enqueues ``audiences.tasks.import_contacts`` after the
commit; the change page polls a small JSON endpoint while the task runs.
"""

from django import forms
from django.contrib import admin
from django.db import transaction
from django.http import FileResponse, Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from import_export.admin import ImportExportMixin
from import_export.forms import ConfirmImportForm, ImportForm

from marketing_hub.admin_mixins import BrandScopedModelAdmin
from marketing_hub.models import Brand
from marketing_hub.roles import role_grants
from marketing_hub.tenancy import brand_roles_for_user, brands_for_user

from . import exports
from .models import Contact, ContactImport
from .resources import ContactResource
from .tasks import import_contacts

MAX_UPLOAD_HELP = "CSV (comma, semicolon or tab), UTF-8 or Latin-1; any size - the file is imported in the background."


class ContactImportUploadForm(forms.ModelForm):
    class Meta:
        model = ContactImport
        fields = ["brand", "file", "target_list", "consent_channel"]
        help_texts = {"file": MAX_UPLOAD_HELP}

    def clean(self):
        data = super().clean()
        brand, target = data.get("brand"), data.get("target_list")
        if brand and target and target.brand_id != brand.pk:
            self.add_error("target_list", "This list belongs to another brand.")
        upload = data.get("file")
        if upload is not None and upload.size == 0:
            self.add_error("file", "The file is empty.")
        return data


def progress_data(record: ContactImport) -> dict:
    """Rows done of total, rows per second and the estimated seconds left (None when unknown)."""
    rate = eta = None
    if record.started_at and record.rows_done:
        elapsed = ((record.finished_at or timezone.now()) - record.started_at).total_seconds()
        rate = record.rows_done / max(elapsed, 0.001)
        if record.total_rows and record.status == ContactImport.Status.RUNNING:
            eta = max(record.total_rows - record.rows_done, 0) / rate
    percent = 100 if record.status == ContactImport.Status.DONE else 0
    if record.total_rows and record.status != ContactImport.Status.DONE:
        percent = min(100, int(100 * record.rows_done / record.total_rows))
    return {
        "status": record.status,
        "status_display": record.get_status_display(),
        "rows_done": record.rows_done,
        "total_rows": record.total_rows,
        "percent": percent,
        "rate": round(rate) if rate else None,
        "eta_seconds": round(eta) if eta is not None else None,
        "created": record.created,
        "updated": record.updated,
        "unchanged": record.unchanged,
        "rejected": record.rejected,
        "message": record.message,
        "finished": record.status in (ContactImport.Status.DONE, ContactImport.Status.FAILED),
    }


@admin.register(ContactImport)
class ContactImportAdmin(BrandScopedModelAdmin):
    form = ContactImportUploadForm
    change_form_template = "admin/audiences/contactimport/change_form.html"
    list_display = [
        "__str__",
        "brand",
        "status",
        "rows_done",
        "created",
        "updated",
        "unchanged",
        "rejected",
        "created_at",
    ]
    list_filter = ["brand", "status"]
    readonly_fields = [
        "original_name", "status", "progress", "total_rows", "rows_done", "created", "updated", "unchanged",
        "rejected", "message", "error_report_link", "started_at", "finished_at", "created_by", "created_at",
    ]  # fmt: skip

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["brand", "file", "target_list", "consent_channel"]
        return ["brand", "target_list", "consent_channel", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["brand", "target_list", "consent_channel", *self.readonly_fields]

    def has_change_permission(self, request, obj=None):
        return False if obj is not None else super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.original_name = form.cleaned_data["file"].name[:255]
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        if not change:
            transaction.on_commit(lambda: import_contacts.delay(obj.pk))

    def get_urls(self):
        urls = [
            path(
                "<int:pk>/progress/", self.admin_site.admin_view(self.progress_view), name="audiences_import_progress"
            ),
            path("<int:pk>/errors/", self.admin_site.admin_view(self.errors_view), name="audiences_import_errors"),
        ]
        return urls + super().get_urls()

    def _get_visible(self, request, pk) -> ContactImport:
        record = self.get_queryset(request).filter(pk=pk).first()
        if record is None or not self.has_view_permission(request, record):
            raise Http404("No such import.")
        return record

    def progress_view(self, request, pk):
        return JsonResponse(progress_data(self._get_visible(request, pk)))

    def errors_view(self, request, pk):
        record = self._get_visible(request, pk)
        if not record.error_report:
            raise Http404("This import has no rejected rows.")
        return FileResponse(
            record.error_report.open("rb"), as_attachment=True, filename=f"import-{record.pk}-rejected-rows.csv"
        )

    @admin.display(description="progress")
    def progress(self, obj):
        data = progress_data(obj)
        return format_html(
            '<progress id="import-progress" max="100" value="{}" data-url="{}"></progress> '
            '<span id="import-progress-text">{}</span>',
            data["percent"],
            reverse("admin:audiences_import_progress", args=[obj.pk]),
            progress_text(data),
        )

    @admin.display(description="error report")
    def error_report_link(self, obj):
        if not obj.error_report:
            return "-"
        url = reverse("admin:audiences_import_errors", args=[obj.pk])
        return format_html('<a href="{}">Download the rejected rows ({})</a>', url, obj.rejected)


def progress_text(data: dict) -> str:
    total = f"{data['total_rows']:,}" if data["total_rows"] is not None else "?"
    text = f"{data['status_display']}: {data['rows_done']:,} of {total} rows"
    if data["rate"]:
        text += f", {data['rate']:,} rows/s"
    if data["eta_seconds"] is not None:
        text += f", about {data['eta_seconds']} s left"
    return text


# -- small files through django-import-export on the Contact admin, and formula-safe exports ------
class ContactImportForm(ImportForm):
    brand = forms.ModelChoiceField(queryset=Brand.objects.none(), required=True)


class ContactConfirmImportForm(ConfirmImportForm):
    brand = forms.ModelChoiceField(queryset=Brand.objects.all(), widget=forms.HiddenInput)


class ContactImportExportMixin(ImportExportMixin):
    """For ContactAdmin: import-export with a brand chosen on the import form, plus streamed exports.

    The resource gets the brand chosen on the form (only brands the user may add contacts to);
    the two actions export the selected contacts as CSV or XLSX with formulas neutralized.
    """

    resource_classes = [ContactResource]
    import_form_class = ContactImportForm
    confirm_form_class = ContactConfirmImportForm

    def _writable_brands(self, request):
        brands = brands_for_user(request.user)
        if request.user.is_superuser:
            return brands
        opts = Contact._meta
        return brands.filter(
            id__in=[
                brand_id
                for brand_id, role in brand_roles_for_user(request.user).items()
                if role_grants(role, opts.app_label, opts.model_name, "add")
            ]
        )

    def has_import_permission(self, request):
        return self.has_add_permission(request)

    def create_import_form(self, request):
        form = super().create_import_form(request)
        form.fields["brand"].queryset = self._writable_brands(request)
        return form

    def create_confirm_form(self, request, import_form=None):
        form = super().create_confirm_form(request, import_form)
        form.fields["brand"].queryset = self._writable_brands(request)
        return form

    def get_confirm_form_initial(self, request, import_form):
        initial = super().get_confirm_form_initial(request, import_form)
        if import_form is not None:
            initial["brand"] = import_form.cleaned_data["brand"].pk
        return initial

    def get_import_resource_kwargs(self, request, **kwargs):
        form = kwargs.get("form")
        brand = form.cleaned_data.get("brand") if form is not None and hasattr(form, "cleaned_data") else None
        return {"brand": brand}

    def get_export_queryset(self, request):
        return self.get_queryset(request)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if self.has_export_permission(request):
            for name in ("export_contacts_csv", "export_contacts_xlsx"):
                func = getattr(type(self), name)
                actions[name] = (func, name, func.short_description)
        return actions

    def export_contacts_csv(self, request, queryset):
        response = StreamingHttpResponse(
            exports.export_csv(self.allowed(request, queryset, "view")), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = 'attachment; filename="contacts.csv"'
        return response

    export_contacts_csv.short_description = "Export selected contacts as CSV (formula-safe)"

    def export_contacts_xlsx(self, request, queryset):
        response = HttpResponse(
            exports.export_xlsx(self.allowed(request, queryset, "view")),
            content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
        response["Content-Disposition"] = 'attachment; filename="contacts.xlsx"'
        return response

    export_contacts_xlsx.short_description = "Export selected contacts as XLSX (formula-safe)"
