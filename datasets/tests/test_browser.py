"""A staff member uploads a CSV file through the real page in chromium and sees its schema."""

from __future__ import annotations

import pytest

from datasets.models import DatasetVersion
from tests.factories import make_classification_frame, make_csv_bytes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_staff_upload_a_csv_file_and_see_its_schema(logged_in_page, live_server, staff, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_bytes(make_csv_bytes(make_classification_frame(30)))
    page = logged_in_page(staff)

    page.click("nav >> text=Datasets")
    page.wait_for_url(f"{live_server.url}/datasets/")
    assert "No datasets yet" in page.content()
    page.fill("#id_name", "customers")
    page.fill("#id_description", "Customers who left")
    page.fill("#id_target_column", "label")
    page.set_input_files("#id_file", str(path))
    page.click("#upload button[type=submit]")

    page.wait_for_url(f"{live_server.url}/datasets/customers/versions/1/")
    assert page.inner_text("h1").startswith("customers")
    assert "Stored version 1 of customers." in page.inner_text(".messages")
    rows = page.locator("table.schema tbody tr")
    assert rows.count() == 4
    assert rows.nth(2).locator("code").first.inner_text() == "city"
    assert rows.nth(2).locator(".badge.categorical").inner_text() == "categorical"
    assert page.locator("code.sha256").inner_text() == DatasetVersion.objects.get().sha256


def test_a_rejected_upload_shows_the_problems_on_the_form(logged_in_page, live_server, staff, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a,a\n1,2\n")
    page = logged_in_page(staff)

    page.goto(f"{live_server.url}/datasets/")
    page.fill("#id_name", "broken")
    page.set_input_files("#id_file", str(path))
    page.click("#upload button[type=submit]")

    problems = page.locator(".upload-problems li").all_inner_texts()
    assert "A target column is required for the first version of dataset 'broken'." in problems
    assert "Column names must be unique; these appear more than once: 'a'." in problems
    assert page.input_value("#id_name") == "broken"
    assert DatasetVersion.objects.count() == 0
