"""CSV import: file checks, header mapping, row rules, idempotence; both the fast and portable paths."""

import csv
import io

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audiences.importer import FileRejected, import_csv
from audiences.models import Consent, ConsentEvent, Contact, ContactList, Suppression

HEADER = "email,phone,first name,surname,customer id,tier\n"


def write(tmp_path, text, name="contacts.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def run(brand, path, **kwargs):
    report = io.StringIO()
    summary = import_csv(brand, path, errors=report, **kwargs)
    report.seek(0)
    return summary, list(csv.DictReader(report))


@pytest.fixture
def brand(brand_a):
    brand_a.default_region = "DE"
    brand_a.save()
    return brand_a


@pytest.fixture(params=["postgres", "portable"])
def fast(request):
    return request.param == "postgres"


def test_synonyms_normalization_attributes_and_reimport_is_idempotent(tmp_path, brand, fast):
    path = write(
        tmp_path,
        HEADER + "Ann@Example.com,0151 2345 6789,Ann,Lee,c-1,gold\n"
        "bob@example.com,,Bob,,c-2,7\n"
        "not-an-email,+49 151 0000,Eve,,c-3,\n",
    )
    summary, errors = run(brand, path, fast=fast)
    assert (summary.created, summary.updated, summary.unchanged, summary.rejected) == (2, 0, 0, 1)
    ann = Contact.objects.get(brand=brand, external_id="c-1")
    assert (ann.email, ann.phone, ann.whatsapp, ann.country) == (
        "ann@example.com", "+4915123456789", "+4915123456789", "DE",
    )  # fmt: skip
    assert (ann.first_name, ann.last_name, ann.attributes) == ("Ann", "Lee", {"tier": "gold"})
    bob = Contact.objects.get(email="bob@example.com")
    assert bob.phone is None and bob.last_name == "" and bob.attributes == {"tier": 7}  # blank -> NULL / ''
    assert {(e["line"], e["column"]) for e in errors} == {("4", "email"), ("4", "phone")}
    assert errors[0]["value"] == "not-an-email"

    again, _ = run(brand, path, fast=fast)
    assert (again.created, again.updated, again.unchanged, again.rejected) == (0, 0, 2, 1)
    assert Contact.objects.filter(brand=brand).count() == 2


def test_update_matches_by_external_id_then_email_and_blank_cells_keep_stored_values(tmp_path, brand, fast):
    Contact.objects.create(
        brand=brand, external_id="c-1", email="old@example.com", first_name="Old", attributes={"a": 1}
    )
    Contact.objects.create(brand=brand, email="kept@example.com", last_name="Kept")
    path = write(tmp_path, "id,email,first name,last name,b\nc-1,new@example.com,New,,2\n,kept@example.com,,,\n")
    summary, errors = run(brand, path, fast=fast)
    assert (summary.created, summary.updated, summary.unchanged, summary.rejected) == (0, 1, 1, 0), errors
    first = Contact.objects.get(external_id="c-1")
    assert (first.email, first.first_name, first.attributes) == ("new@example.com", "New", {"a": 1, "b": 2})
    assert Contact.objects.get(email="kept@example.com").last_name == "Kept"


def test_rejected_rows_change_nothing_stored(tmp_path, brand, fast):
    Contact.objects.create(brand=brand, external_id="x-1", email="a@example.com")
    Contact.objects.create(brand=brand, external_id="x-2", email="b@example.com")
    # keys of two different contacts; a bad time zone; a later row for the same person
    path = write(
        tmp_path,
        "external id,email,tz,first name\nx-1,b@example.com,,Mixed\nx-2,,Mars/Base,Bad\n"
        "n-1,n@example.com,,First\nn-2,n@example.com,,Second\n",
    )
    summary, errors = run(brand, path, fast=fast)
    assert (summary.created, summary.rejected) == (1, 3)
    reasons = {e["line"]: e["reason"] for e in errors}
    assert "different contacts" in reasons["2"]
    assert "IANA" in reasons["3"] and [e["column"] for e in errors if e["line"] == "3"] == ["tz"]
    assert reasons["5"] == "same email as line 4"
    assert set(Contact.objects.values_list("first_name", flat=True)) == {"", "First"}


def test_duplicates_across_chunks_are_rejected_too(tmp_path, brand, fast):
    path = write(tmp_path, "email,first name\na@example.com,One\nb@example.com,Two\na@example.com,Three\n")
    summary, errors = run(brand, path, fast=fast, chunk_rows=1)
    assert (summary.created, summary.rejected) == (2, 1)
    assert errors[0]["line"] == "4" and "line 2" in errors[0]["reason"]
    assert Contact.objects.get(email="a@example.com").first_name == "One"


def test_new_stored_and_repeated_rows_in_chunks_add_up(tmp_path, brand, fast):
    # PostgreSQL first tries a chunk as all new contacts, matches it when a row meets a stored one, and
    # tries as all new again after a chunk that matched nothing
    Contact.objects.create(brand=brand, email="stored@example.com", first_name="Old")
    Contact.objects.create(brand=brand, email="kept@example.com", first_name="Kept")
    path = write(
        tmp_path,
        "email,first name\nnew@example.com,New\nstored@example.com,Changed\n"  # lines 2-3
        "new@example.com,Again\nkept@example.com,Kept\n"  # 4-5
        "other@example.com,Other\nx@example.com,X\n"  # 6-7: nothing stored
        "y@example.com,Y\nz@example.com,Z\n"  # 8-9: all new
        "kept@example.com,Once more\n",  # 10
    )
    summary, errors = run(brand, path, fast=fast, chunk_rows=2)
    assert (summary.created, summary.updated, summary.unchanged, summary.rejected) == (5, 1, 1, 2)
    assert [(e["line"], e["reason"]) for e in errors] == [
        ("4", "same contact as line 2"), ("10", "same contact as line 5"),
    ]  # fmt: skip
    names = dict(Contact.objects.filter(brand=brand).values_list("email", "first_name"))
    assert names == {
        "new@example.com": "New", "stored@example.com": "Changed", "kept@example.com": "Kept",
        "other@example.com": "Other", "x@example.com": "X", "y@example.com": "Y", "z@example.com": "Z",
    }  # fmt: skip


def test_chunks_of_new_people_are_not_matched_row_by_row(tmp_path, brand):
    # the same file as above: chunks 1 and 5 meet stored contacts, 2 and 3 follow a chunk that did,
    # 4 follows a chunk that matched nothing and is one INSERT
    Contact.objects.create(brand=brand, email="stored@example.com")
    Contact.objects.create(brand=brand, email="kept@example.com")
    emails = ["new", "stored", "new", "kept", "other", "x", "y", "z", "kept"]
    path = write(tmp_path, "email\n" + "".join(f"{e}@example.com\n" for e in emails))
    with CaptureQueriesContext(connection) as queries:
        summary, _ = run(brand, path, fast=True, chunk_rows=2)
    assert (summary.created, summary.unchanged, summary.rejected) == (5, 2, 2)
    assert sum(q["sql"].startswith("UPDATE import_stage") for q in queries) == 4
    fresh = write(tmp_path, "email\n" + "".join(f"n{i}@example.com\n" for i in range(6)), name="fresh.csv")
    with CaptureQueriesContext(connection) as queries:
        assert run(brand, fresh, fast=True, chunk_rows=2)[0].created == 6
    assert not any(q["sql"].startswith("UPDATE import_stage") for q in queries)


def test_a_row_whose_new_id_is_taken_is_created_with_another(tmp_path, brand):
    # a contact stored with an id the sequence has not handed out yet (a manual insert, a restore):
    # the row given that id meets it, matches no stored contact by its keys, and must not be lost
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence('audiences_contact', 'id'))")
        taken = cursor.fetchone()[0] + 1
    Contact.objects.create(pk=taken, brand=brand, email="taken@example.com")
    summary, errors = run(brand, write(tmp_path, "email\nnew@example.com\n"), fast=True)
    assert (summary.created, summary.updated, summary.unchanged, summary.rejected, errors) == (1, 0, 0, 0, [])
    assert Contact.objects.get(email="new@example.com").pk != taken
    assert Contact.objects.get(pk=taken).email == "taken@example.com"


def test_erased_addresses_are_not_reimported(tmp_path, brand, fast):
    Suppression.objects.create(brand=brand, channel="email", address="gone@example.com", reason="erased")
    summary, errors = run(brand, write(tmp_path, "email\ngone@example.com\nstay@example.com\n"), fast=fast)
    assert (summary.created, summary.rejected) == (1, 1)
    assert errors[0]["reason"] == "erased at the contact's request"
    assert not Contact.objects.filter(email="gone@example.com").exists()


def test_consent_only_when_asked_and_never_over_an_unsubscribe(tmp_path, brand, fast):
    out = Contact.objects.create(brand=brand, email="out@example.com")
    Consent.objects.create(
        contact=out, channel="sms", status="unsubscribed", source="keyword STOP", updated_at=out.created_at
    )
    path = write(tmp_path, "email,consent_email\na@example.com,yes\nb@example.com,no\nout@example.com,\n")
    run(brand, path, fast=fast)
    assert list(Consent.objects.filter(channel="email").values_list("contact__email", flat=True)) == ["a@example.com"]
    event = ConsentEvent.objects.get()
    assert (event.status, event.source) == ("subscribed", "import")

    run(brand, path, fast=fast, consent_channel="sms", source="import:list.csv")
    sms = dict(Consent.objects.filter(channel="sms").values_list("contact__email", "status"))
    assert sms == {"a@example.com": "subscribed", "b@example.com": "subscribed", "out@example.com": "unsubscribed"}
    run(brand, path, fast=fast, consent_channel="sms")
    assert ConsentEvent.objects.count() == 3  # nothing new on a re-import


def test_target_list(tmp_path, brand, fast):
    target = ContactList.objects.create(brand=brand, name="Fair 2025")
    path = write(tmp_path, "email\na@example.com\nb@example.com\n")
    run(brand, path, fast=fast, target_list=target)
    run(brand, path, fast=fast, target_list=target)
    assert target.memberships.count() == 2


@pytest.mark.parametrize(
    ("raw", "encoding", "delimiter"),
    [
        ("\ufeffE-Mail;Vorname\njörg@example.com;Jörg\n", "utf-8", ";"),
        ("Email Address\tGiven Name\njörg@example.com\tJörg\n", "utf-8", "\t"),
        ("email,first name\njörg@example.com,Jörg\n", "latin-1", ","),
    ],
)
def test_encodings_and_delimiters(tmp_path, brand, raw, encoding, delimiter):
    summary, errors = run(brand, write(tmp_path, raw, encoding=encoding))
    assert summary.delimiter == delimiter and summary.created == 1, errors
    contact = Contact.objects.get()
    assert contact.email == "jörg@example.com"
    assert contact.first_name == "Jörg" or contact.attributes == {"vorname": "Jörg"}


def test_quoted_newlines_ragged_rows_and_a_huge_cell(tmp_path, brand):
    huge = "x" * 1_000_000
    text = (
        'email,first name,note\na@example.com,Ann,"two\nlines"\nb@example.com,Bob\n'
        f'c@example.com,Cy,"{huge}"\nd@example.com,Di,ok\n'
    )
    summary, errors = run(brand, write(tmp_path, text))
    assert summary.created == 2 and summary.rejected == 2
    assert Contact.objects.get(email="a@example.com").attributes == {"note": "two\nlines"}
    assert Contact.objects.get(email="d@example.com").first_name == "Di"
    by_line = {e["line"]: e["reason"] for e in errors}
    assert by_line["4"] == "the row has 2 cells but the header has 3"
    assert "longer than 100,000 characters" in by_line["5"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"PK\x03\x04\x00\x00binary", "NUL bytes"),
        ("email\n".encode("utf-16"), "NUL bytes"),
        (b"email\n\x81\x8d@example.com\n", "Unknown text encoding"),
        (b"Dear customer,\nthis is a letter, not a list.\n", "no column identifies the contact"),
        (b"email,E-mail\na@example.com,b@example.com\n", "both mean email"),
    ],
)
def test_files_refused_with_a_clear_message_store_nothing(tmp_path, brand, content, message):
    with pytest.raises(FileRejected, match=message):
        run(brand, write(tmp_path, content))
    assert not Contact.objects.exists()


def test_validation_in_worker_processes_gives_the_same_result(tmp_path, brand):
    lines = [f"c-{i},user{i}@example.com,0151 {i:08d}" for i in range(60)]
    lines[10] = "c-10,broken,"
    lines[40] = "c-1,again@example.com,"  # a duplicate external id in a later chunk
    path = write(tmp_path, "id,email,phone\n" + "\n".join(lines) + "\n")
    summary, errors = run(brand, path, chunk_rows=7, workers=2)
    assert (summary.created, summary.rejected, summary.rows_done) == (58, 2, 60)
    assert sorted((e["line"], e["reason"]) for e in errors) == [
        ("12", "'broken' is not a valid email address"),
        ("42", "same contact as line 3"),
    ]


def test_files_without_quotes_read_in_the_workers_give_the_same_rows_and_report(tmp_path, brand):
    # without a quote character workers parse their own lines; one quoted header cell sends the
    # same rows through the parse-here path: stored contacts and the report must be identical
    body = [f"c-{i},user{i}@example.com,0151 {i:08d},Nä\\me\t{i}" for i in range(40)]
    body[3] = "c-3,broken,,"  # invalid email
    body[5] = ""  # blank line: skipped
    body[8] = "c-8,user7@example.com,,"  # same email as line 9, in the same chunk
    body[12] = "c-12,x@example.com"  # ragged
    body[20] = "c-1,again@example.com,,"  # same contact as line 3, a later chunk
    body[30] = "c-30,user30@example.com,+49 151 0000,"  # invalid phone
    results = []
    for header, workers in [("id,email,phone,first name", 1), ('id,email,phone,"first name"', 1),
                            ("id,email,phone,first name", 2), ('id,email,phone,"first name"', 2)]:  # fmt: skip
        Contact.objects.filter(brand=brand).delete()
        text = header + "\r\n" + "\r\n".join(body) + "\r\n"
        summary, errors = run(brand, write(tmp_path, text), chunk_rows=7, workers=workers)
        stored = sorted(Contact.objects.filter(brand=brand).values_list("external_id", "email", "phone", "first_name"))
        results.append((summary.line(), summary.rows_done, errors, stored))
    assert results[0][0] == "34 created, 0 updated, 0 unchanged, 5 rejected"
    assert [(e["line"], e["reason"]) for e in results[0][2]] == [
        ("5", "'broken' is not a valid email address"),
        ("14", "the row has 2 cells but the header has 4"),  # a chunk's row errors come before its duplicates
        ("10", "same email as line 9"),
        ("22", "same contact as line 3"),
        ("32", "'+49 151 0000' is not a valid phone number for region DE"),
    ]
    assert ("c-0", "user0@example.com", "+4915100000000", "Nä\\me\t0") in results[0][3]
    assert results[1] == results[0] and results[2] == results[0] and results[3] == results[0]


def test_attribute_texts_that_need_escaping_are_stored_as_written(tmp_path, brand, fast):
    # the COPY text carries attributes as JSON with non-ASCII characters unescaped: backslashes,
    # tabs and other COPY escapes must still arrive intact (the portable path has no COPY)
    cities = ["Köln", "Zoë's \\ place", "tab\there", "vt\x0bff\x0cbs\x08", "☃ \U0001f600", "12.50", "line\u2028sep"]
    rows = [f"c-{i},{city}" for i, city in enumerate(cities)]
    summary, errors = run(brand, write(tmp_path, "id,city\n" + "\n".join(rows) + "\n"), fast=fast)
    assert (summary.created, errors) == (len(cities), [])
    stored = dict(Contact.objects.filter(brand=brand).values_list("external_id", "attributes"))
    assert stored == {f"c-{i}": {"city": 12.5 if city == "12.50" else city} for i, city in enumerate(cities)}


def test_names_with_tabs_and_backslashes_are_stored_as_written(tmp_path, brand, fast):
    # a tab inside a cell of a comma-separated file is COPY's column separator unless escaped
    names = ["Tab\tbed", "Back\\slash", "Plain", "Both\t\\"]
    rows = [f"c-{i},{name}" for i, name in enumerate(names)]
    summary, errors = run(brand, write(tmp_path, "id,first name\n" + "\n".join(rows) + "\n"), fast=fast)
    assert (summary.created, errors) == (len(names), [])
    stored = dict(Contact.objects.filter(brand=brand).values_list("external_id", "first_name"))
    assert stored == {f"c-{i}": name for i, name in enumerate(names)}


def test_a_brand_deleted_during_an_import_stops_it(tmp_path, brand):
    # the brand is no foreign-key constraint on contacts: each chunk checks (and locks) it instead
    from marketing_hub.models import Brand

    path = write(tmp_path, "id,email\nc-1,a@example.com\n")
    Brand.objects.filter(pk=brand.pk).delete()
    with pytest.raises(Brand.DoesNotExist):
        import_csv(brand, path, fast=True)
    assert not Contact.objects.filter(brand_id=brand.pk).exists()
