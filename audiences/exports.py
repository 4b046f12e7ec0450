"""Contacts out as CSV or XLSX, safe to open in a spreadsheet.

A cell that starts with = + - @ (or a tab/carriage return before one) is a formula to Excel and
LibreOffice: a contact who typed ``=HYPERLINK(...)`` as their name would run it on the marketer's
machine (CSV injection). Such cells get a leading ``'``, which spreadsheets show as text. Used by
the admin export and the API; streamed, so a million contacts never sit in memory at once.
"""

import csv
import io
from collections.abc import Iterable, Iterator

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
COLUMNS = (
    "id", "external_id", "email", "phone", "whatsapp", "telegram_chat_id", "first_name", "last_name", "locale",
    "country", "time_zone", "created_at", "updated_at",
)  # fmt: skip


def neutralize(value):
    """``value`` as a spreadsheet shows it, never as a formula it would run."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _attribute_keys(queryset) -> list[str]:
    keys: set[str] = set()
    for attributes in queryset.values_list("attributes", flat=True).iterator(chunk_size=5000):
        keys.update(attributes or {})
    return sorted(keys)


def contact_rows(queryset) -> Iterator[list]:
    """The header, then one list per contact: fixed columns, then one column per attribute key."""
    queryset = queryset.filter(erased_at__isnull=True).order_by("pk")
    keys = _attribute_keys(queryset)
    yield [*COLUMNS, *keys]
    for contact in queryset.iterator(chunk_size=5000):
        row = [getattr(contact, name) for name in COLUMNS]
        row[COLUMNS.index("created_at")] = contact.created_at.isoformat()
        row[COLUMNS.index("updated_at")] = contact.updated_at.isoformat()
        row += [contact.attributes.get(key) for key in keys]
        yield [neutralize("" if value is None else value) for value in row]


class _Echo:
    def write(self, value):
        return value


def csv_lines(rows: Iterable[list]) -> Iterator[str]:
    """CSV text line by line (for a StreamingHttpResponse); starts with a BOM so Excel reads UTF-8."""
    writer = csv.writer(_Echo())
    yield "\ufeff"
    for row in rows:
        yield writer.writerow(row)


def export_csv(queryset) -> Iterator[str]:
    return csv_lines(contact_rows(queryset))


def export_xlsx(queryset) -> bytes:
    """An XLSX workbook (openpyxl's write-only mode keeps memory flat while writing)."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("contacts")
    for row in contact_rows(queryset):
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
