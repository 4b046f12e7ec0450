"""django-import-export resource for small files in the Contact admin (preview, confirm, row errors).

Every row goes through ``clean_contact_fields`` like every other way in; a blank cell means "no
value given" (a new contact gets NULL addresses, never ''; a stored value is kept), the header
synonyms are the importer's, and a contact is matched by external id, then email, then phone.
Exports neutralize spreadsheet formulas. Big files go through the background import instead.
"""

from django.core.exceptions import ValidationError
from import_export import fields, resources, widgets

from .exports import neutralize
from .importer import _HEADER_TO_FIELD, ERASED_REASON, KEYS, _erased, _header_key
from .models import Contact
from .normalize import clean_contact_fields

NULLABLE = ("external_id", "email", "phone", "whatsapp", "telegram_chat_id")
COLUMNS = (
    "external_id", "email", "phone", "whatsapp", "telegram_chat_id", "first_name", "last_name", "locale",
    "country", "time_zone",
)  # fmt: skip


class ContactResource(resources.ModelResource):
    external_id = fields.Field("external_id", "external_id", widgets.CharWidget(allow_blank=False))
    email = fields.Field("email", "email", widgets.CharWidget(allow_blank=False))
    phone = fields.Field("phone", "phone", widgets.CharWidget(allow_blank=False))
    whatsapp = fields.Field("whatsapp", "whatsapp", widgets.CharWidget(allow_blank=False))
    telegram_chat_id = fields.Field("telegram_chat_id", "telegram_chat_id", widgets.CharWidget(allow_blank=False))

    class Meta:
        model = Contact
        fields = ("id", *COLUMNS)
        export_order = ("id", *COLUMNS)
        import_id_fields = ()
        skip_unchanged = True
        report_skipped = True

    def __init__(self, brand=None, **kwargs):
        super().__init__(**kwargs)
        self.brand = brand
        self._erased = None

    def get_queryset(self):
        queryset = Contact.objects.filter(erased_at__isnull=True)
        return queryset.filter(brand=self.brand) if self.brand is not None else queryset

    def before_import_row(self, row, **kwargs):
        """Map synonyms, normalize, and leave in ``row`` only the fields the file gives a value for."""
        if self.brand is None:
            raise ValidationError("Choose the brand to import into.")
        raw = {}
        for header in list(row):
            fld = _HEADER_TO_FIELD.get(_header_key(str(header or "")), header if header in COLUMNS else None)
            value = row.pop(header)
            if fld in COLUMNS and str(value or "").strip():
                raw[fld] = str(value)
        values, errors = clean_contact_fields(raw, self.brand.default_region)
        if errors:
            raise ValidationError(errors)
        if not any(values.get(key) for key in KEYS):
            raise ValidationError("no email, phone or external id to identify the contact")
        if self._erased is None:
            self._erased = _erased(self.brand)
        for key in ("email", "phone"):
            if values.get(key) in self._erased[key]:
                raise ValidationError({key: ERASED_REASON})
        if values.get("phone") and not values.get("whatsapp"):
            values["whatsapp"] = values["phone"]
        row.update(values)

    def get_instance(self, instance_loader, row):
        found = {}
        for key in KEYS:
            if row.get(key):
                contact = self.get_queryset().filter(**{key: row[key]}).first()
                if contact is not None:
                    found.setdefault(contact.pk, contact)
        if len(found) > 1:
            raise ValidationError("external id, email and phone belong to different contacts")
        return next(iter(found.values()), None)

    def init_instance(self, row=None):
        instance = Contact(brand=self.brand)
        for name in NULLABLE:
            setattr(instance, name, None)
        return instance

    def before_save_instance(self, instance, row, **kwargs):
        instance.brand = self.brand

    def export_field(self, field, instance, **kwargs):
        return neutralize(super().export_field(field, instance, **kwargs))
