"""Streaming CSV import of contacts: one pass to check the file, one to load it in chunks.

Why two passes: the encoding (and whether the file is text at all) can only be decided after
reading every byte, and nothing may be stored from a file that is then refused. The first pass
is cheap (bytes only: NUL check, UTF-8 check, line count for the progress bar, whether any quote
character occurs); the second pass decodes, validates each row with ``clean_contact_fields`` (the
rules every way in applies) and stores chunk by chunk, one transaction per chunk. Big files are
read and validated in forked workers, each taking whole chunks of lines when no quote can make a
record span lines.

Rules decided here (documented for the marketers in the admin's upload page):

- A blank cell means "no value given": it never overwrites what is stored; a new contact gets
  NULL (addresses, external id) or '' (names, locale...). Unmapped columns go into
  ``attributes`` and are merged into the stored ones, key by key.
- A contact is matched by external id, then email, then phone. A row whose keys belong to two
  different stored contacts is rejected.
- The same contact twice in one file: the LATER row is rejected ("same contact as line N"), so
  a file says one thing per contact and a re-import reports every row unchanged.
- Addresses suppressed as "erased" (GDPR) are rejected, never re-imported.
- Consent is recorded only when asked (``consent_channel``) or a ``consent_<channel>`` column
  says yes/true/1/y/x, and never over an explicit unsubscribe (an opt-out wins over a list).

PostgreSQL takes the fast path (COPY into a temporary staging table, set-based SQL); other
databases (SQLite in embedded mode) take a portable ORM path with the same rules.
"""

from __future__ import annotations

import codecs
import csv
import functools
import gc
import io
import itertools
import json
import operator
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from psycopg.errors import UniqueViolation

from marketing_hub.models import Brand

from .models import (
    Channel,
    Consent,
    ConsentEvent,
    ConsentStatus,
    Contact,
    ContactList,
    ListMembership,
    Suppression,
    SuppressionReason,
)
from .normalize import attribute_value, clean_contact_fields

CHUNK_ROWS = 20_000
PARALLEL_FROM_ROWS = 50_000  # smaller files are validated in-process (forking costs more than it saves)
PARALLEL_WORKERS = 2
MAX_CELL = 100_000  # characters; a longer cell is almost always an unclosed quote
SCAN_BLOCK = 1 << 20
KEYS = ("external_id", "email", "phone")
FIELDS = (
    "external_id", "email", "phone", "whatsapp", "telegram_chat_id", "first_name", "last_name", "locale",
    "country", "time_zone",
)  # fmt: skip
YES = {"yes", "true", "1", "y", "x", "ja", "oui", "si", "sí"}
NO = {"", "no", "false", "0", "n", "nein", "non"}
ERASED_REASON = "erased at the contact's request"
TOO_LONG = f"a cell is longer than {MAX_CELL:,} characters (an unclosed quote?)"

SYNONYMS = {
    "email": ["email", "e mail", "email address", "e mail address", "mail"],
    "phone": ["phone", "mobile", "cell", "phone number", "telephone", "mobile number", "cell phone", "tel"],
    "first_name": ["first name", "firstname", "given name", "forename"],
    "last_name": ["last name", "lastname", "surname", "family name"],
    "external_id": ["id", "customer id", "external id", "externalid", "customer number"],
    "locale": ["locale", "language", "lang"],
    "time_zone": ["timezone", "time zone", "tz"],
    "whatsapp": ["whatsapp", "whatsapp number"],
    "telegram_chat_id": ["telegram", "telegram chat id", "telegram id"],
    "country": ["country", "country code"],
}
_HEADER_TO_FIELD = {name: fld for fld, names in SYNONYMS.items() for name in names}
_CONSENT_COLUMN = re.compile(r"^consent[ _-]?(\w+)$")

csv.field_size_limit(MAX_CELL)


class FileRejected(Exception):
    """The whole file is refused (nothing stored); the message is meant for the person who uploaded it."""


@dataclass
class Summary:
    total_rows: int = 0
    rows_done: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    encoding: str = ""
    delimiter: str = ""

    def line(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged, {self.rejected} rejected"


@dataclass
class Layout:
    """How the file's columns map onto a contact."""

    header: list[str]
    fields: dict[int, str] = field(default_factory=dict)  # column index -> contact field
    consents: dict[int, str] = field(default_factory=dict)  # column index -> channel
    attributes: dict[int, str] = field(default_factory=dict)  # column index -> attribute key

    def column(self, name: str) -> str:
        """The file's own header for a contact field (for error reports)."""
        for index, fld in self.fields.items():
            if fld == name:
                return self.header[index]
        return name

    @functools.cached_property
    def attribute_cells(self) -> Callable[[list[str]], tuple]:
        """A row's cells of the attribute columns (a key for rows with the same attributes)."""
        return operator.itemgetter(*self.attributes) if self.attributes else lambda cells: ()


@dataclass(slots=True)
class Row:
    line: int
    values: dict
    attributes: dict
    consents: list[str]


class ErrorReport:
    """Rejected rows as CSV (line, column, value, reason), written as they come."""

    def __init__(self, stream: io.TextIOBase):
        self.writer = csv.writer(stream)
        self.writer.writerow(["line", "column", "value", "reason"])

    def add(self, line: int, column: str, value, reason: str) -> None:
        text = "" if value is None else str(value)
        if len(text) > 200:
            text = text[:200] + f"… ({len(text)} characters)"
        self.writer.writerow([line, column, _neutralize(text), reason])


def _neutralize(text: str) -> str:
    from .exports import neutralize

    return neutralize(text)


# -- pass 1: is this a text file, which encoding, how many lines ------------------------------------
def scan(path: Path) -> tuple[str, int, bool]:
    """``(encoding, line count, has a quote character)``; raises FileRejected for empty, binary or undecodable files."""
    size = path.stat().st_size
    if size == 0:
        raise FileRejected("The file is empty.")
    lines = 0
    quoted = False
    last = b""
    utf8 = codecs.getincrementaldecoder("utf-8")()
    utf8_ok = True
    offset = 0
    with path.open("rb") as fh:
        first = True
        while block := fh.read(SCAN_BLOCK):
            if b"\x00" in block:
                raise FileRejected(
                    "This is not a CSV text file (it contains NUL bytes: a spreadsheet, archive or UTF-16 file?). "
                    "Save it as 'CSV UTF-8' and upload again."
                )
            if first and block.startswith(codecs.BOM_UTF8):
                block_for_decoder = block[3:]
            else:
                block_for_decoder = block
            first = False
            if utf8_ok:
                try:
                    utf8.decode(block_for_decoder)
                except UnicodeDecodeError as exc:
                    utf8_ok = False
                    offset += exc.start
            if utf8_ok:
                offset += len(block)
            lines += block.count(b"\n")
            quoted = quoted or b'"' in block
            last = block[-1:]
    if utf8_ok:
        try:
            utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8_ok = False
    if last != b"\n":
        lines += 1
    if utf8_ok:
        with path.open("rb") as fh:
            bom = fh.read(3) == codecs.BOM_UTF8
        encoding = "utf-8-sig" if bom else "utf-8"
    else:
        encoding = "cp1252"  # Latin-1 as spreadsheets write it (Windows-1252 adds € and quotes)
        with path.open("rb") as fh:
            position = 0
            while block := fh.read(SCAN_BLOCK):
                try:
                    block.decode(encoding)
                except UnicodeDecodeError as exc:
                    raise FileRejected(
                        f"Unknown text encoding: byte 0x{block[exc.start]:02x} at offset {position + exc.start} "
                        "is neither UTF-8 nor Latin-1. Save the file as 'CSV UTF-8' and upload again."
                    ) from None
                position += len(block)
    return encoding, lines, quoted


# -- pass 2: header ---------------------------------------------------------------------------------
def _header_key(text: str) -> str:
    return " ".join(re.sub(r"[-_.:/]+", " ", text.strip().lower()).split())


def sniff_delimiter(first_line: str) -> str:
    """The candidate that splits the header into the most columns (comma wins ties)."""
    best, best_count = ",", 1
    for delimiter in (",", ";", "\t"):
        count = len(next(csv.reader([first_line], delimiter=delimiter), []))
        if count > best_count:
            best, best_count = delimiter, count
    return best


def map_header(header: list[str]) -> Layout:
    layout = Layout(header=[h.strip() for h in header])
    seen: dict[str, str] = {}
    for index, raw in enumerate(layout.header):
        key = _header_key(raw)
        if not key:
            continue  # a column without a name (often a trailing delimiter) is ignored
        fld = _HEADER_TO_FIELD.get(key)
        consent = _CONSENT_COLUMN.match(key.replace(" ", "_"))
        if fld:
            if fld in seen:
                raise FileRejected(f"Columns {seen[fld]!r} and {raw!r} both mean {fld.replace('_', ' ')}; keep one.")
            seen[fld] = raw
            layout.fields[index] = fld
        elif consent:
            channel = consent.group(1)
            if channel not in Channel.values:
                raise FileRejected(
                    f"Column {raw!r}: unknown consent channel {channel!r} (use one of {', '.join(Channel.values)})."
                )
            layout.consents[index] = channel
        else:
            layout.attributes[index] = key.replace(" ", "_")
    if not any(fld in KEYS for fld in layout.fields.values()):
        shown = ", ".join(repr(h) for h in layout.header[:10]) or "nothing"
        raise FileRejected(
            "Not a contacts CSV: no column identifies the contact (need email, phone or external id; "
            f"the first line holds {shown})."
        )
    return layout


# -- pass 2: rows -----------------------------------------------------------------------------------
def _records(reader) -> Iterator[tuple[int, list[str] | None, str]]:
    """``(first line, cells or None, problem)``: csv errors become rejected rows, not a crash."""
    previous = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            reason = str(exc)
            if "field larger than field limit" in reason:
                reason = TOO_LONG
            yield previous + 1, None, reason
            previous = reader.line_num
            continue
        yield previous + 1, cells, ""
        previous = reader.line_num


def clean_row(
    layout: Layout, cells: list[str], line: int, region: str, consent_channel: str, report, shared: dict | None = None
) -> Row | None:
    """Validate one row; report its problems and return None when it is rejected.

    With ``shared`` (a dict kept for a chunk), rows with the same attribute cells share one
    attributes dict, which must then be left unchanged.
    """
    width = len(layout.header)
    if len(cells) != width and not (len(cells) > width and not any(c.strip() for c in cells[width:])):
        report.add(line, "", "", f"the row has {len(cells)} cells but the header has {width}")
        return None
    raw = {fld: cell for i, fld in layout.fields.items() if (cell := cells[i]).strip()}
    values, errors = clean_contact_fields(raw, region)
    consents = [consent_channel] if consent_channel else []
    for index, channel in layout.consents.items():
        answer = cells[index].strip().lower()
        if answer in YES:
            if channel not in consents:
                consents.append(channel)
        elif answer not in NO:
            errors[f"#{index}"] = f"consent must be yes/true/1 or no/false/0, not {cells[index]!r}"
    if not errors and not (values.get("external_id") or values.get("email") or values.get("phone")):  # KEYS
        errors[""] = "no email, phone or external id to identify the contact"
    if errors:
        for fld, reason in errors.items():
            if fld.startswith("#"):
                column, value = layout.header[int(fld[1:])], cells[int(fld[1:])]
            else:
                column, value = layout.column(fld) if fld else "", raw.get(fld, "")
            report.add(line, column, value, reason)
        return None
    if values.get("phone") and not values.get("whatsapp"):
        values["whatsapp"] = values["phone"]
    if shared is None:
        attributes = _attributes(layout, cells)
    else:  # attribute columns (city, tier...) repeat a few values: each combination is converted once
        key = layout.attribute_cells(cells)
        attributes = shared.get(key)
        if attributes is None:
            attributes = shared[key] = _attributes(layout, cells)
    return Row(line, values, attributes, consents)


def _attributes(layout: Layout, cells: list[str]) -> dict:
    return {key: attribute_value(cell) for i, key in layout.attributes.items() if (cell := cells[i]).strip()}


class _Collected:
    """Errors gathered in a validation worker, written to the report by the importing process."""

    def __init__(self):
        self.items: list[tuple] = []

    def add(self, *item) -> None:
        self.items.append(item)


def _validate_batch(layout: Layout, region: str, consent_channel: str, records: list, shared: bool = False) -> tuple:
    """``(rows, errors, rejected, last line)`` for a batch of records; pure Python, no database.

    ``shared``: rows with the same attribute cells share one (read-only) attributes dict.
    """
    report = _Collected()
    rows, rejected = [], 0
    attributes = {} if shared else None
    for line, cells, problem in records:
        if cells is None:
            report.add(line, "", "", problem)
            rejected += 1
        elif cells and not (len(cells) == 1 and not cells[0].strip()):  # blank lines are skipped
            row = clean_row(layout, cells, line, region, consent_channel, report, attributes)
            if row is None:
                rejected += 1
            else:
                rows.append(row)
    return rows, report.items, rejected, records[-1][0] if records else 0


@dataclass(frozen=True)
class _Job:
    """What a validation worker needs besides the batch (inherited by forking, never pickled)."""

    layout: Layout
    region: str
    consent_channel: str
    erased: dict[str, set[str]]
    delimiter: str
    copy: bool  # encode the valid rows as COPY text for PostgresLoader instead of returning them


STAGE_COLUMNS = ("line", *FIELDS, "attributes", "consents")
_COPY_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b", "\f": "\\f", "\v": "\\v"}
)
_COPY_SPECIAL = re.compile(r"[\\\n\r\b\f\v]")  # and a tab inside a cell
_COPY_TABS = len(STAGE_COLUMNS) - 2  # between the cells after the line number


# Non-ASCII characters written as they are: JSON's \u escapes would put a backslash (a COPY escape) in most rows.
_json = json.JSONEncoder(ensure_ascii=False).encode


def copy_text(rows: list[Row]) -> str:
    """``STAGE_COLUMNS`` of valid rows in COPY's text format, built in the workers.

    A blank value is an empty cell, which the COPY reads as NULL (every blank value is NULL in the stage).
    """
    lines = []
    encoded: dict[int, str] = {}  # id of an attributes dict -> its JSON (rows may share one; all alive here)
    for row in rows:
        get = row.values.get
        cells = [get(name) or "" for name in FIELDS]
        if attributes := row.attributes:
            text = encoded.get(id(attributes))
            if text is None:
                text = encoded[id(attributes)] = _json(attributes)
            cells.append(text)
        else:
            cells.append("")
        cells.append("{" + ",".join(f'"{channel}"' for channel in row.consents) + "}" if row.consents else "")
        text = "\t".join(cells)
        if text.count("\t") != _COPY_TABS or _COPY_SPECIAL.search(text):
            text = "\t".join([cell.translate(_COPY_ESCAPES) for cell in cells])
        lines.append(f"{row.line}\t{text}")
    lines.append("")
    return "\n".join(lines) if rows else ""


@dataclass
class Batch:
    """One chunk, validated: the valid rows (or their COPY text), and what goes to the report."""

    rows: list[Row]
    copy: str | None
    count: int
    consents: bool
    errors: list[tuple]
    rejected: int
    last_line: int


def _line_records(lines: list[str], first_line: int, delimiter: str) -> Iterator[tuple[int, list[str] | None, str]]:
    """``_records`` of lines that hold one record each (a file without quotes), numbered from ``first_line``.

    Without a quote character csv.reader only splits a line at the delimiter (after dropping its line
    end) and checks the cell size limit, so this does just that, several times faster.
    """
    for line, text in enumerate(lines, first_line):
        text = text.rstrip("\r\n")
        cells = text.split(delimiter) if text else []
        if len(text) > MAX_CELL and any(len(cell) > MAX_CELL for cell in cells):
            yield line, None, TOO_LONG
        else:
            yield line, cells, ""


def _prepare(job: _Job, first_line: int, lines: list[str] | None, records: list | None) -> Batch:
    """Read (when given raw lines), validate and de-duplicate one chunk; pure Python, no database."""
    if records is None:
        records = list(_line_records(lines, first_line, job.delimiter))
    rows, errors, rejected, last_line = _validate_batch(
        job.layout, job.region, job.consent_channel, records, shared=job.copy
    )
    report = _Collected()
    report.items = errors  # the key errors of a chunk follow its validation errors, as they always did
    keys: dict[tuple[str, str], int] = {}
    chunk = []
    for row in rows:
        if _check_keys(row, job.layout, keys, job.erased, report) is None:
            rejected += 1
        else:
            chunk.append(row)
    return Batch(
        rows=[] if job.copy else chunk,
        copy=copy_text(chunk) if job.copy else None,
        count=len(chunk),
        consents=any(row.consents for row in chunk),
        errors=report.items,
        rejected=rejected,
        last_line=last_line,
    )


_WORKER_JOB: _Job | None = None


def _start_worker(job: _Job) -> None:
    global _WORKER_JOB  # set once in each forked worker
    _WORKER_JOB = job
    # The cyclic garbage collector's full passes walked every object inherited from the importing process
    # (~140,000 with Django loaded) and the chunk's live rows: ~30 % of a worker's CPU. The inherited objects
    # are frozen out of its reach, and a chunk (rows, dicts, strings: no reference cycles, freed by reference
    # counting) is prepared with the collector off; one pass after each chunk takes whatever cycle there was.
    gc.freeze()
    gc.disable()


def _prepare_in_worker(first_line: int, lines: list[str] | None, records: list | None) -> Batch:
    batch = _prepare(_WORKER_JOB, first_line, lines, records)
    gc.collect()
    return batch


def _batches(records, size: int) -> Iterator[list]:
    batch = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _work(fh, reader, records, quoted: bool, size: int) -> Iterator[tuple[int, list[str] | None, list | None]]:
    """The chunks of the file after its header: raw lines, or records parsed here when the file has quotes.

    Without a quote character every line is one record, so workers can parse their own lines and
    this process only hands them out; a quoted cell may span lines, so such files are parsed here.
    """
    if quoted:
        for batch in _batches(records, size):
            yield 0, None, batch
        return
    first_line = reader.line_num + 1
    while lines := list(itertools.islice(fh, size)):
        yield first_line, lines, None
        first_line += len(lines)


def _prepared(job: _Job, work, workers: int) -> Iterator[Batch]:
    """Prepared chunks in file order; with ``workers`` > 1, prepared in forked processes.

    Parsing and validating (phone numbers above all) is most of the import's CPU time, so big
    files are prepared on every core while this process feeds PostgreSQL. The workers only
    compute (no database, no files).
    """
    if workers <= 1:
        for item in work:
            yield _prepare(job, *item)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(job,)) as pool:
        pending: deque = deque()
        for item in work:
            pending.append(pool.submit(_prepare_in_worker, *item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _check_keys(row: Row, layout: Layout, keys: dict, erased: dict[str, set[str]], report) -> Row | None:
    values = row.values
    for key in ("email", "phone"):
        if values.get(key) in erased[key]:
            report.add(row.line, layout.column(key), values[key], ERASED_REASON)
            return None
    found = [(key, value) for key in KEYS if (value := values.get(key))]
    for item in found:
        if item in keys:
            key, value = item
            report.add(row.line, layout.column(key), value, f"same {key.replace('_', ' ')} as line {keys[item]}")
            return None
    for item in found:
        keys[item] = row.line
    return row


def _erased(brand: Brand) -> dict[str, set[str]]:
    rows = Suppression.objects.filter(
        brand=brand, reason=SuppressionReason.ERASED, channel__in=[Channel.EMAIL, Channel.SMS]
    ).values_list("channel", "address")
    out: dict[str, set[str]] = {"email": set(), "phone": set()}
    for channel, address in rows:
        out["email" if channel == Channel.EMAIL else "phone"].add(address)
    return out


# -- the import -------------------------------------------------------------------------------------
def import_csv(
    brand: Brand,
    path: str | Path,
    *,
    target_list: ContactList | None = None,
    consent_channel: str = "",
    source: str = "import",
    actor: str = "",
    errors: io.TextIOBase | None = None,
    progress: Callable[[Summary], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    fast: bool | None = None,
    workers: int | None = None,
) -> Summary:
    """Import ``path`` into ``brand``; rejected rows go to ``errors`` as CSV. Raises FileRejected."""
    path = Path(path)
    if consent_channel and consent_channel not in Channel.values:
        raise FileRejected(f"Unknown consent channel {consent_channel!r}.")
    if target_list is not None and target_list.brand_id != brand.pk:
        raise FileRejected("The target list belongs to another brand.")
    encoding, lines, quoted = scan(path)
    summary = Summary(total_rows=max(lines - 1, 0), encoding=encoding)
    report = ErrorReport(errors if errors is not None else io.StringIO())
    with path.open(encoding=encoding, newline="") as fh:
        first_line = fh.readline()
        if not first_line.strip():
            raise FileRejected("The file is empty (its first line is blank).")
        summary.delimiter = sniff_delimiter(first_line)
        fh.seek(0)
        reader = csv.reader(fh, delimiter=summary.delimiter)
        records = _records(reader)
        _, header, problem = next(records)
        if header is None:
            raise FileRejected(f"The header line cannot be read: {problem}.")
        layout = map_header(header)
        if fast is None:
            fast = connection.vendor == "postgresql"
        loader = (PostgresLoader if fast else PortableLoader)(brand, target_list, source[:200], actor[:150], report)
        if workers is None:
            workers = min(PARALLEL_WORKERS, os.cpu_count() or 1) if summary.total_rows >= PARALLEL_FROM_ROWS else 1
        job = _Job(layout, brand.default_region, consent_channel, _erased(brand), summary.delimiter, copy=fast)
        try:
            for batch in _prepared(job, _work(fh, reader, records, quoted, chunk_rows), workers):
                for error in batch.errors:
                    report.add(*error)
                summary.rejected += batch.rejected
                summary.rows_done = max(summary.rows_done, batch.last_line - 1)
                if batch.count:
                    with transaction.atomic():
                        loader.load(batch, summary)
                if progress:
                    progress(summary)
        finally:
            loader.close()
    summary.rows_done = summary.total_rows = max(summary.rows_done, summary.total_rows)
    if progress:
        progress(summary)
    return summary


class PostgresLoader:
    """COPY each chunk into a temporary staging table, then a handful of set-based statements."""

    MIXED = "(id_x <> id_e) OR (id_x <> id_p) OR (id_e <> id_p)"  # keys of different stored contacts

    def __init__(self, brand, target_list, source, actor, report):
        self.brand, self.target_list, self.source, self.actor, self.report = brand, target_list, source, actor, report
        self.contact = Contact._meta.db_table
        self.done = False  # import_done holds rows
        self.done_indexed = False
        # Whether the next chunk is first tried as new contacts only (see load); the previous chunk decides.
        self.all_new = True
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS import_stage, import_done")
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [self.contact])
            self.sequence = cursor.fetchone()[0]
            # While chunks are tried as new contacts, each row gets its new contact's id as it is copied in.
            cursor.execute(
                "CREATE TEMP TABLE import_stage (line integer, "
                + ", ".join(f"{f} text" for f in FIELDS)
                + ", attributes jsonb, consents text[], id_x bigint, id_e bigint, id_p bigint,"
                " contact_id bigint DEFAULT nextval(%s::regclass), is_new boolean NOT NULL DEFAULT true)",
                [self.sequence],
            )
            # Contacts this import already wrote or matched: a later row for one is a duplicate.
            # Indexed when a chunk first meets stored contacts (never, in a first import of new people).
            cursor.execute("CREATE TEMP TABLE import_done (contact_id bigint NOT NULL, line integer)")

    def close(self):
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS import_stage, import_done")

    def load(self, batch: Batch, summary: Summary) -> None:
        with connection.cursor() as cursor:
            # the per-row lookups' estimated cost makes PostgreSQL JIT-compile each chunk's statements
            # (~1.5 s a chunk, more than running them); OFFSET 0 below keeps each lookup to one per row
            cursor.execute("SET LOCAL jit = off")
            # the brand is not a foreign-key constraint on contacts: hold it for this chunk instead of
            # PostgreSQL checking it per row; deleting it waits for this chunk (see audiences.receivers)
            cursor.execute(f"SELECT 1 FROM {Brand._meta.db_table} WHERE id = %s FOR KEY SHARE", [self.brand.pk])  # noqa: S608
            if cursor.fetchone() is None:
                raise Brand.DoesNotExist(f"brand {self.brand.pk} was deleted during the import")
            cursor.execute("TRUNCATE import_stage")
            with cursor.cursor.copy(f"COPY import_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN (NULL '')") as copy:
                copy.write(batch.copy)
            if not (self.all_new and self._insert_all_new(cursor, summary)):
                matched = self._load_matching(cursor, summary)
                self._ids_on_copy(cursor, matched == 0)
            cursor.execute("INSERT INTO import_done SELECT contact_id, line FROM import_stage")
            self.done = True
            if batch.consents:
                self._consent(cursor)
            if self.target_list is not None:
                cursor.execute(
                    f"INSERT INTO {ListMembership._meta.db_table} (contact_list_id, contact_id, added_at)"  # noqa: S608
                    " SELECT %s, contact_id, now() FROM import_stage ON CONFLICT DO NOTHING",
                    [self.target_list.pk],
                )

    def _insert_all_new(self, cursor, summary: Summary) -> bool:
        """Create every row of the chunk as a new contact, if none meets a stored one on any key.

        A first import (and any chunk of new people) is then one INSERT: the unique keys' own index
        checks do the matching. A row that meets a stored contact (or one this import wrote) breaks the
        INSERT off at that row; the chunk is rolled back to before it and matched row by row instead.
        """
        try:
            with transaction.atomic():
                summary.created += self._insert(cursor)
        except IntegrityError as exc:
            if not isinstance(exc.__cause__, UniqueViolation):
                raise
            return False
        return True

    def _ids_on_copy(self, cursor, on: bool) -> None:
        """Give staged rows new ids as they are copied in only while chunks are tried as all new."""
        if on != self.all_new:
            default = "SET DEFAULT nextval(%s::regclass)" if on else "DROP DEFAULT"
            cursor.execute(f"ALTER TABLE import_stage ALTER contact_id {default}", [self.sequence] if on else [])
            self.all_new = on

    def _load_matching(self, cursor, summary: Summary) -> int:
        """Match each row to a stored contact, reject what the rules refuse, create and update; rows matched."""
        matched, mixed = self._match(cursor)
        if mixed:
            matched -= self._reject(
                cursor,
                f"SELECT line, external_id, email, phone FROM import_stage WHERE {self.MIXED}",  # noqa: S608
                lambda r: ("email" if r[2] else "phone", r[2] or r[3], "external id, email and phone belong to "
                           "different contacts"),
                summary,
            )  # fmt: skip
        if matched and self.done:
            # only a stored contact can have been met before; a new one's id is fresh
            if not self.done_indexed:
                cursor.execute("CREATE UNIQUE INDEX import_done_contact ON import_done (contact_id)")
                self.done_indexed = True
            matched -= self._reject(
                cursor,
                # one index probe a row: a join hashed all of import_done for every chunk (growing with the file)
                "SELECT line, first FROM (SELECT s.line, (SELECT d.line FROM import_done d WHERE d.contact_id = s.contact_id)"
                " AS first FROM import_stage s WHERE NOT s.is_new OFFSET 0) m WHERE first IS NOT NULL",
                lambda r: ("", "", f"same contact as line {r[1]}"),
                summary,
            )
        summary.created += self._insert(cursor)
        updated = self._update(cursor) if matched else 0
        summary.updated += updated
        summary.unchanged += matched - updated
        return matched

    def _match(self, cursor) -> tuple[int, int]:
        """Find each row's stored contact by every key; a row matching none gets a new id from the sequence.

        Returns ``(rows matched, rows whose keys point at different contacts)``.
        """
        found = ", ".join(
            f"(SELECT c.id FROM {self.contact} c WHERE c.brand_id = %s AND c.{k} = s.{k}) AS {column}"  # noqa: S608
            for column, k in (("id_x", "external_id"), ("id_e", "email"), ("id_p", "phone"))
        )
        cursor.execute(
            "UPDATE import_stage s SET id_x = m.id_x, id_e = m.id_e, id_p = m.id_p,"  # noqa: S608
            " contact_id = COALESCE(m.id_x, m.id_e, m.id_p, nextval(%s)),"
            " is_new = (m.id_x IS NULL AND m.id_e IS NULL AND m.id_p IS NULL)"
            f" FROM (SELECT s.line, {found} FROM import_stage s OFFSET 0) m WHERE m.line = s.line",
            [self.sequence, *[self.brand.pk] * 3],
        )
        counts = f"SELECT count(*) FILTER (WHERE NOT is_new), count(*) FILTER (WHERE {self.MIXED}) FROM import_stage"  # noqa: S608
        cursor.execute(counts)
        return cursor.fetchone()

    def _reject(self, cursor, query, describe, summary) -> int:
        cursor.execute(query)
        bad = cursor.fetchall()
        for record in bad:
            column, value, reason = describe(record)
            self.report.add(record[0], column, value, reason)
        if bad:
            cursor.execute("DELETE FROM import_stage WHERE line = ANY(%s)", [[r[0] for r in bad]])
            summary.rejected += len(bad)
        return len(bad)

    def _insert(self, cursor) -> int:
        text = ("first_name", "last_name", "locale", "country", "time_zone")
        columns = ["id", "brand_id", *FIELDS, "attributes", "created_at", "updated_at"]
        select = ["contact_id", "%s"]
        select += [f"COALESCE({f}, '')" if f in text else f for f in FIELDS]
        select += ["COALESCE(attributes, '{}'::jsonb)", "now()", "now()"]
        cursor.execute(
            f"INSERT INTO {self.contact} ({', '.join(columns)}) SELECT {', '.join(select)}"  # noqa: S608
            " FROM import_stage WHERE is_new",
            [self.brand.pk],
        )
        return cursor.rowcount

    def _update(self, cursor) -> int:
        sets = ", ".join(f"{f} = COALESCE(s.{f}, c.{f})" for f in FIELDS)
        differs = " OR ".join(f"(s.{f} IS NOT NULL AND s.{f} IS DISTINCT FROM c.{f})" for f in FIELDS)
        cursor.execute(
            f"UPDATE {self.contact} c SET {sets}, attributes = c.attributes || COALESCE(s.attributes, '{{}}'::jsonb),"  # noqa: S608
            f" updated_at = now() FROM import_stage s WHERE c.id = s.contact_id AND NOT s.is_new"
            f" AND ({differs} OR (s.attributes IS NOT NULL AND NOT c.attributes @> s.attributes))"
        )
        return cursor.rowcount

    def _consent(self, cursor) -> None:
        consent, event = Consent._meta.db_table, ConsentEvent._meta.db_table
        cursor.execute("DROP TABLE IF EXISTS import_consent")
        cursor.execute(
            f"""
            CREATE TEMP TABLE import_consent AS
            SELECT w.contact_id, w.channel FROM (
                SELECT DISTINCT s.contact_id, ch AS channel FROM import_stage s, unnest(s.consents) ch
            ) w LEFT JOIN {consent} c ON c.contact_id = w.contact_id AND c.channel = w.channel
            WHERE c.id IS NULL OR c.status = %s
            """,  # noqa: S608
            [ConsentStatus.PENDING],
        )
        cursor.execute(
            f"INSERT INTO {event} (contact_id, channel, status, source, actor, created_at)"  # noqa: S608
            " SELECT contact_id, channel, %s, %s, %s, now() FROM import_consent",
            [ConsentStatus.SUBSCRIBED, self.source, self.actor],
        )
        cursor.execute(
            f"INSERT INTO {consent} (contact_id, channel, status, source, updated_at)"  # noqa: S608
            " SELECT contact_id, channel, %s, %s, now() FROM import_consent"
            " ON CONFLICT (contact_id, channel) DO UPDATE SET status = EXCLUDED.status,"
            " source = EXCLUDED.source, updated_at = EXCLUDED.updated_at",
            [ConsentStatus.SUBSCRIBED, self.source],
        )
        cursor.execute("DROP TABLE import_consent")


class PortableLoader:
    """The same rules through the ORM (SQLite in embedded mode): slower, but no SQL dialect."""

    def __init__(self, brand, target_list, source, actor, report):
        self.brand, self.target_list, self.source, self.actor, self.report = brand, target_list, source, actor, report
        self.done: dict[int, int] = {}  # contact id -> line

    def close(self):
        self.done.clear()

    def load(self, batch: Batch, summary: Summary) -> None:
        rows = batch.rows
        existing = self._existing(rows)
        new: list[tuple[Row, Contact]] = []
        changed: list[Contact] = []
        kept: list[tuple[Row, Contact]] = []
        for row in rows:
            found = {existing[(k, row.values[k])].pk: existing[(k, row.values[k])] for k in KEYS
                     if (k, row.values.get(k)) in existing}  # fmt: skip
            if len(found) > 1:
                key = "email" if row.values.get("email") else "phone"
                self.report.add(
                    row.line, key, row.values.get(key), "external id, email and phone belong to different contacts"
                )
                summary.rejected += 1
                continue
            contact = next(iter(found.values()), None)
            if contact is not None and contact.pk in self.done:
                self.report.add(row.line, "", "", f"same contact as line {self.done[contact.pk]}")
                summary.rejected += 1
                continue
            if contact is None:
                contact = Contact(brand=self.brand, attributes=row.attributes, **row.values)
                new.append((row, contact))
                continue
            diff = [f for f, v in row.values.items() if getattr(contact, f) != v]
            merged = {**contact.attributes, **row.attributes}
            if merged != contact.attributes:
                diff.append("attributes")
            for f in diff:
                setattr(contact, f, merged if f == "attributes" else row.values[f])
            if diff:
                contact.updated_at = timezone.now()
                changed.append(contact)
            kept.append((row, contact))
            self.done[contact.pk] = row.line
        Contact.objects.bulk_create([c for _, c in new], batch_size=500)
        if changed:
            Contact.objects.bulk_update(changed, [*FIELDS, "attributes", "updated_at"], batch_size=500)
        summary.created += len(new)
        summary.updated += len(changed)
        summary.unchanged += len(kept) - len(changed)
        if new and new[0][1].pk is None:  # backends that do not return ids on bulk insert
            by_key = self._existing([row for row, _ in new])
            new = [(row, by_key[next((k, row.values[k]) for k in KEYS if row.values.get(k))]) for row, _ in new]
        for row, contact in new:
            self.done[contact.pk] = row.line
        everyone = new + kept
        self._consent(everyone)
        if self.target_list is not None:
            ListMembership.objects.bulk_create(
                [ListMembership(contact_list=self.target_list, contact=c) for _, c in everyone],
                ignore_conflicts=True,
                batch_size=500,
            )

    def _existing(self, rows: list[Row]) -> dict[tuple[str, str], Contact]:
        found: dict[tuple[str, str], Contact] = {}
        by_pk: dict[int, Contact] = {}
        for key in KEYS:
            values = list({row.values[key] for row in rows if row.values.get(key)})
            for start in range(0, len(values), 500):
                for contact in Contact.objects.filter(brand=self.brand, **{f"{key}__in": values[start : start + 500]}):
                    contact = by_pk.setdefault(contact.pk, contact)
                    found[(key, getattr(contact, key))] = contact
        return found

    def _consent(self, pairs) -> None:
        wanted = {(c.pk, ch) for row, c in pairs for ch in row.consents}
        if not wanted:
            return
        ids = {cid for cid, _ in wanted}
        current = {
            (c.contact_id, c.channel): c.status
            for c in Consent.objects.filter(contact_id__in=ids)  # small files only on this path
        }
        todo = [(cid, ch) for cid, ch in wanted if current.get((cid, ch)) in (None, ConsentStatus.PENDING)]
        now = timezone.now()
        ConsentEvent.objects.bulk_create(
            ConsentEvent(
                contact_id=cid, channel=ch, status=ConsentStatus.SUBSCRIBED, source=self.source, actor=self.actor,
                created_at=now,
            )
            for cid, ch in todo
        )  # fmt: skip
        Consent.objects.bulk_create(
            (
                Consent(contact_id=cid, channel=ch, status=ConsentStatus.SUBSCRIBED, source=self.source, updated_at=now)
                for cid, ch in todo
            ),
            update_conflicts=True,
            unique_fields=["contact", "channel"],
            update_fields=["status", "source", "updated_at"],
        )


# -- one ContactImport, run by the Celery task, the admin and the command ---------------------------
def run_contact_import(contact_import, progress: Callable[[Summary], None] | None = None) -> Summary | None:
    """Run a stored ContactImport: status, progress every chunk, summary and the error report.

    Returns the summary, or None when the file was rejected (``message`` says why).
    """
    import tempfile

    from django.core.files import File

    from .models import ContactImport

    record = ContactImport.objects.filter(pk=contact_import.pk)
    record.update(status=ContactImport.Status.RUNNING, started_at=timezone.now(), message="")

    def on_progress(summary: Summary) -> None:
        record.update(
            rows_done=summary.rows_done,
            total_rows=summary.total_rows,
            created=summary.created,
            updated=summary.updated,
            unchanged=summary.unchanged,
            rejected=summary.rejected,
        )
        if progress:
            progress(summary)

    actor = contact_import.created_by.get_username() if contact_import.created_by_id else ""
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as report:
        try:
            summary = import_csv(
                contact_import.brand,
                contact_import.file.path,
                target_list=contact_import.target_list,
                consent_channel=contact_import.consent_channel,
                source=f"import:{contact_import.original_name or contact_import.file.name}",
                actor=actor,
                errors=report,
                progress=on_progress,
            )
        except FileRejected as exc:
            record.update(status=ContactImport.Status.FAILED, message=str(exc), finished_at=timezone.now())
            return None
        except Exception as exc:
            record.update(
                status=ContactImport.Status.FAILED,
                message=f"The import stopped on an internal error ({type(exc).__name__}); rows already "
                "saved stay saved and importing the file again is safe.",
                finished_at=timezone.now(),
            )
            raise
        if summary.rejected:
            report.seek(0)
            contact_import.refresh_from_db()
            contact_import.error_report.save(f"import-{contact_import.pk}-errors.csv", File(report), save=True)
    record.update(status=ContactImport.Status.DONE, message=summary.line(), finished_at=timezone.now())
    return summary
