"""The import as people use it: admin upload + a real Celery worker, the command, import-export, exports."""

import csv
import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from openpyxl import load_workbook

from audiences import exports
from audiences.models import Contact, ContactImport, ContactList
from audiences.resources import ContactResource

ROOT = Path(__file__).resolve().parents[2]

CSV = b"E-Mail;Mobile;Vorname;Tier\nann@example.com;0151 2345 6789;Ann;gold\nbroken;;Bo;silver\n"


@pytest.fixture
def brand(brand_a):
    brand_a.default_region = "DE"
    brand_a.save()
    return brand_a


def test_admin_upload_enqueues_and_the_task_imports(client, marketer_a, brand, django_capture_on_commit_callbacks):
    """The upload stores the file and enqueues the task after commit; the task here runs in-process."""
    from audiences.tasks import import_contacts

    client.force_login(marketer_a)
    target = ContactList.objects.create(brand=brand, name="Fair")
    sent = []
    original = import_contacts.delay
    import_contacts.delay = lambda pk: sent.append(pk)  # the real worker run is the e2e test below
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                "/admin/audiences/contactimport/add/",
                {
                    "brand": brand.pk,
                    "file": SimpleUploadedFile("fair.csv", CSV, "text/csv"),
                    "target_list": target.pk,
                    "consent_channel": "email",
                },
            )
    finally:
        import_contacts.delay = original
    assert response.status_code == 302, response.content.decode()[:2000]
    record = ContactImport.objects.get()
    assert sent == [record.pk] and record.original_name == "fair.csv" and record.created_by == marketer_a
    assert import_contacts(record.pk) == "1 created, 0 updated, 0 unchanged, 1 rejected"

    record.refresh_from_db()
    assert (record.status, record.total_rows, record.rows_done, record.created, record.rejected) == ("done", 2, 2, 1, 1)
    assert target.memberships.count() == 1
    assert Contact.objects.get().consents.get().source == "import:fair.csv"
    progress = client.get(f"/admin/audiences/contactimport/{record.pk}/progress/").json()
    assert progress["percent"] == 100 and progress["finished"] and progress["rejected"] == 1
    page = client.get(f"/admin/audiences/contactimport/{record.pk}/change/").content.decode()
    assert "Download the rejected rows (1)" in page and 'id="import-progress"' in page
    report = client.get(f"/admin/audiences/contactimport/{record.pk}/errors/")
    rows = list(csv.reader(io.StringIO(b"".join(report.streaming_content).decode())))
    assert rows[1][:3] == ["3", "E-Mail", "broken"]


def test_other_brands_imports_are_404(client, marketer_a, brand_b):
    record = ContactImport.objects.create(brand=brand_b, file="imports/x.csv")
    client.force_login(marketer_a)
    assert client.get(f"/admin/audiences/contactimport/{record.pk}/progress/").status_code == 404


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_import(brand, tmp_path, clean_broker):
    record = ContactImport(brand=brand, original_name="w.csv")
    record.file.save("w.csv", io.BytesIO(CSV), save=True)
    from django.db import connection

    from marketing_hub import processes

    env = processes.environment(DATABASE_URL=processes.database_url(connection.settings_dict))
    worker = processes.start_worker(env, "import")
    try:
        from audiences.tasks import import_contacts

        result = import_contacts.delay(record.pk)
        assert result.get(timeout=60) == "1 created, 0 updated, 0 unchanged, 1 rejected"
    finally:
        processes.kill(worker, signal.SIGTERM)
    record.refresh_from_db()
    assert record.status == "done" and record.error_report
    assert Contact.objects.get().phone == "+4915123456789"


def test_command_summary_and_exit_codes(brand, tmp_path, capsys):
    good = tmp_path / "good.csv"
    good.write_bytes(CSV)
    call_command("import_contacts", str(good), "--brand", brand.slug, "--list", "Shell", "--consent", "sms")
    out = capsys.readouterr().out
    assert "1 created, 0 updated, 0 unchanged, 1 rejected" in out and "good.errors.csv" in out
    assert ContactList.objects.get(name="Shell").memberships.count() == 1
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x01binary")
    with pytest.raises(CommandError, match=r"bad\.csv rejected: This is not a CSV text file"):
        call_command("import_contacts", str(bad), "--brand", brand.slug)
    exit_code = subprocess.run(
        [sys.executable, "manage.py", "import_contacts", str(bad), "--brand", "nope"], cwd=ROOT, capture_output=True
    ).returncode
    assert exit_code != 0


def test_import_export_resource_preview_errors_and_blank_is_null(client, marketer_a, brand):
    client.force_login(marketer_a)
    data = b"email,phone,first_name\nann@example.com,,Ann\nnot-mail,,Bad\n,0151 2345 6789,Phil\n"
    response = client.post(
        "/admin/audiences/contact/import/",
        {"brand": brand.pk, "format": "0", "import_file": SimpleUploadedFile("small.csv", data, "text/csv")},
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "is not a valid email address" in page and "Some rows failed to validate" in page
    assert not Contact.objects.exists()  # preview only

    resource = ContactResource(brand=brand)
    import tablib

    result = resource.import_data(tablib.Dataset().load(data.decode(), format="csv"), dry_run=False)
    assert result.has_validation_errors()
    rows = {c.first_name: c for c in Contact.objects.all()}
    assert set(rows) == {"Ann", "Phil"}
    assert rows["Ann"].phone is None and rows["Phil"].email is None and rows["Phil"].whatsapp == "+4915123456789"


def test_exports_neutralize_formulas_in_csv_and_xlsx(brand):
    Contact.objects.create(brand=brand, email="a@example.com", first_name="=HYPERLINK(\"x\")", last_name="+1",
                           attributes={"note": "@SUM(A1)", "n": -3})  # fmt: skip
    text = "".join(exports.export_csv(Contact.objects.all())).lstrip("\ufeff")
    header, row = list(csv.reader(io.StringIO(text)))
    values = dict(zip(header, row, strict=True))
    assert (
        values["first_name"] == '\'=HYPERLINK("x")' and values["last_name"] == "'+1" and values["note"] == "'@SUM(A1)"
    )
    assert values["n"] == "-3"  # numbers are numbers, not formulas
    sheet = load_workbook(io.BytesIO(exports.export_xlsx(Contact.objects.all()))).active
    cells = {sheet.cell(1, i).value: sheet.cell(2, i) for i in range(1, sheet.max_column + 1)}
    assert cells["first_name"].value == '\'=HYPERLINK("x")' and cells["first_name"].data_type == "s"
    assert cells["note"].value == "'@SUM(A1)"
    exported = ContactResource(brand=brand).export()
    assert exported.dict[0]["first_name"] == '\'=HYPERLINK("x")'


def test_admin_export_actions(client, marketer_a, brand):
    contact = Contact.objects.create(brand=brand, email="a@example.com", first_name="-2+3")
    client.force_login(marketer_a)
    response = client.post(
        "/admin/audiences/contact/", {"action": "export_contacts_csv", "_selected_action": [contact.pk]}
    )
    assert response.status_code == 200
    assert "'-2+3" in b"".join(response.streaming_content).decode()
