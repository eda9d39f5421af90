"""The Airflow UI in a real browser (Debian's chromium, driven by Playwright) against the ``make up`` stack.

A user logs in, adds a data connector through Admin -> Connections with the provider's connection type
and its labelled fields, presses Test and sees success, then opens the exporter's DAG and sees a
successful run and the Asset events it created. Screenshots go to ``test-artifacts/ui/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strm_provider.naming import is_test_object
from tests.exporting import exporter_dag

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "stack.py"
ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``scripts/stack.py up`` on free ports, once one export has landed; ``down`` afterwards.

    ``STRM_UI_STACK=<stack dir>`` runs against a stack already up (e.g. ``.stack`` of ``make up``) instead.
    """
    assert Path(CHROMIUM).exists(), "chromium is missing: run `make system-deps` (apt-get install chromium)"
    given = os.environ.get("STRM_UI_STACK")
    root = Path(given) if given else tmp_path_factory.mktemp("ui-stack")
    if not given:
        cmd = [sys.executable, str(SCRIPT), "up", "--root", str(root), "--ports", "auto", "--wait-files", "1"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert done.returncode == 0, done.stdout + done.stderr
    try:
        state = json.loads((root / "stack.json").read_text())
        yield {
            "root": root,
            "url": f"http://127.0.0.1:{state['ports']['ui']}",
            "s3_url": f"http://127.0.0.1:{state['ports']['s3']}",
            "password": json.loads((root / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())[
                "admin"
            ],
            "key": json.loads((root / "s3.json").read_text())["AccessKey"],
        }
    finally:
        if not given:
            subprocess.run([sys.executable, str(SCRIPT), "down", "--root", str(root)], timeout=120, cwd=REPO)


@pytest.fixture
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def bucket_keys(stack: dict[str, Any]) -> list[str]:
    import boto3

    admin = json.loads((stack["root"] / "s3-admin.json").read_text())
    s3 = boto3.client(
        "s3",
        endpoint_url=stack["s3_url"],
        region_name="eu-west-1",
        aws_access_key_id=admin["AccessKeyId"],
        aws_secret_access_key=admin["SecretAccessKey"],
    )
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="strmprivacy-export-demo")
    return [item["Key"] for p in pages for item in p.get("Contents", [])]


def forget_connection(stack: dict[str, Any], conn_id: str) -> None:
    import httpx

    login = {"username": "admin", "password": stack["password"]}
    token = httpx.post(f"{stack['url']}/auth/token", json=login, timeout=30).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    httpx.delete(f"{stack['url']}/api/v2/connections/{conn_id}", headers=headers, timeout=30)


def test_add_a_data_connector_test_it_and_see_the_exporter_run(stack: dict[str, Any], page: Any) -> None:
    from playwright.sync_api import expect

    url = stack["url"]
    secret = stack["key"]["SecretAccessKey"]
    forget_connection(stack, "my-s3")  # a stack given by STRM_UI_STACK may hold one from an earlier run

    # log in (simple auth manager; the password file is what `make up` points to)
    page.goto(url)
    expect(page.get_by_role("button", name="Sign In")).to_be_visible()
    shot(page, "01-login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(stack["password"])
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url(f"{url}/")

    # Admin -> Connections -> Add Connection, of the provider's type
    page.get_by_role("button", name="Admin").click()
    page.get_by_role("menuitem", name="Connections").click()
    expect(page.get_by_role("row").filter(has_text="strm_kafka_default")).to_be_visible()
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.locator("input[name=connection_id]").fill("my-s3")
    dialog.get_by_role("combobox").click()
    page.keyboard.type("STRM AWS S3")
    page.keyboard.press("Enter")
    for label in ("AWS access key ID", "AWS secret access key"):
        expect(dialog.get_by_text(label, exact=True)).to_be_visible()
    # each field says what leaving it empty means
    expect(dialog.get_by_placeholder("AKIA... (empty: the worker's own AWS identity)")).to_be_visible()
    both_empty = "(or Credentials JSON below; both empty: the AWS default credential chain)"
    expect(dialog.get_by_placeholder(both_empty)).to_be_visible()
    dialog.get_by_label("AWS access key ID").fill(stack["key"]["AccessKeyId"])
    dialog.get_by_label("AWS secret access key").fill(secret)
    shot(page, "02-add-connection-standard-fields")
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    labels = ("Bucket", "Region", "Endpoint URL", "Role ARN", "Server-side encryption", "KMS key", "Credentials JSON")
    for label in (*labels, "Test prefix"):
        expect(dialog.get_by_text(re.compile(rf"^{label}\s*$"))).to_be_visible()
    # every select shows a choice: "none" for no server-side encryption, never an empty "null"
    expect(dialog.get_by_text("null", exact=True)).to_have_count(0)
    dialog.locator("input[name=element_bucket]").fill("strmprivacy-export-demo")
    dialog.locator("input[name=element_endpoint_url]").fill(stack["s3_url"])
    dialog.locator("input[name=element_test_prefix]").fill("events")
    shot(page, "03-add-connection-extra-fields")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="my-s3", exact=True))
    expect(row).to_be_visible()
    assert secret not in page.content()

    # Test: the provider writes the empty validation file with the least-privilege key
    before = {k for k in bucket_keys(stack) if is_test_object(k)}
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as reply:
        row.get_by_role("button", name="Test Connection").click()
    result = reply.value.json()
    assert reply.value.status == 200 and result["status"] is True, result
    expect(page.get_by_text("Test Connection Successful")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Wrote s3://strmprivacy-export-demo/events/\.strm_test_"))).to_be_visible()
    assert re.search(r", as arn:aws:iam::\d{12}:user/\S+$", result["message"]), result  # who wrote it
    page.wait_for_timeout(800)  # let the toast finish fading in, for the screenshot only
    shot(page, "04-connection-test-success")
    new = {k for k in bucket_keys(stack) if is_test_object(k)} - before
    assert len(new) == 1 and next(iter(new)).startswith("events/.strm_test_")
    assert secret not in page.content()

    # the exporter's DAG: a successful scheduled run, and the Asset events it created
    page.get_by_role("link", name="Dags").click()
    page.get_by_role("link", name=exporter_dag("s3-demo")).click()
    page.wait_for_url(re.compile(f"/dags/{exporter_dag('s3-demo')}"))
    expect(page.get_by_role("heading", name="Latest Run").first).to_be_visible()
    expect(page.get_by_text("s3://strmprivacy-export-demo/events").first).to_be_visible()
    page.get_by_role("link", name="Runs", exact=True).click()
    expect(page.get_by_role("row").filter(has_text="success").first).to_be_visible()
    shot(page, "05-exporter-dag-runs")
    page.get_by_role("link", name="Assets").click()
    page.wait_for_url(re.compile(r"/assets"))
    asset_row = page.get_by_role("row").filter(has_text="s3://strmprivacy-export-demo/events")
    expect(asset_row).to_be_visible()
    expect(asset_row).to_contain_text(re.compile(r"1 Dag.*1 Task"))  # scheduled: the downstream; produced: export
    shot(page, "06-assets")


def test_chromium_is_debians_and_no_browser_was_downloaded() -> None:
    """The browser is the system package, never a ``playwright install`` download."""
    assert shutil.which("chromium") == CHROMIUM
    assert not (Path.home() / ".cache" / "ms-playwright").exists()
