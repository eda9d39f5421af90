"""The Airflow UI in a real browser (Debian's chromium, driven by Playwright) against the ``make up`` stack.

A user logs in, adds a data connector through Admin -> Connections with the provider's connection type
and its labelled fields, presses Test and sees success, then opens the exporter's DAG and sees a
successful run and the Asset events it created. It runs on the Airflow of the test's environment (the
stack runs there too): the React UI on Airflow 3, Flask AppBuilder's pages on Airflow 2, where the steps
differ only in where things are (the Test button in the form, "Datasets" for Assets). Airflow 3.0's React
form shows a provider's own fields only when Flask AppBuilder is installed beside the API server (3.1 shows them
always) and has no Test button (3.1 added it): there the user types the provider's settings into the Extra
Fields JSON and tests the saved connection through the REST API's connection test. Screenshots go to
``test-artifacts/ui/<line>/``.
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
from packaging.version import Version

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
        cmd = [
            sys.executable,
            str(SCRIPT),
            "up",
            "--root",
            str(root),
            "--ports",
            "auto",
            "--interval",
            "10s",
            "--wait-files",
            "1",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert done.returncode == 0, done.stdout + done.stderr
    try:
        state = json.loads((root / "stack.json").read_text())
        airflow = state["airflow"]  # version, URL, login and REST API of the stack's Airflow
        version = Version(airflow["version"])
        yield {
            "root": root,
            "url": airflow["url"],
            "user": airflow["user"],
            "password": airflow["password"],
            "api": f"{airflow['url']}{airflow['api']}",
            "auth": airflow["auth"],
            "line": f"{version.major}.{version.minor}",
            "fab": version.major < 3,  # Airflow 2: Flask AppBuilder's pages
            "react_3_0": (version.major, version.minor) == (3, 0),  # no provider form fields, no Test button
            "s3_url": f"http://127.0.0.1:{state['ports']['s3']}",
            "key": json.loads((root / "s3.json").read_text())["AccessKey"],
        }
    finally:
        if not given:
            subprocess.run([sys.executable, str(SCRIPT), "down", "--root", str(root)], timeout=120, cwd=REPO)


@pytest.fixture
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def shot(page: Any, stack: dict[str, Any], name: str) -> None:
    folder = ARTIFACTS / stack["line"]
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


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


def rest_api(stack: dict[str, Any]) -> Any:
    """The REST API's client: basic auth on Airflow 2 (``/api/v1``), a JWT on Airflow 3 (``/api/v2``)."""
    import httpx

    login = {"username": stack["user"], "password": stack["password"]}
    if stack["auth"] == "basic":
        return httpx.Client(base_url=stack["api"], auth=(login["username"], login["password"]), timeout=60)
    token = httpx.post(f"{stack['url']}/auth/token", json=login, timeout=30).json()["access_token"]
    return httpx.Client(base_url=stack["api"], headers={"Authorization": f"Bearer {token}"}, timeout=60)


def forget_connection(stack: dict[str, Any], conn_id: str) -> None:
    with rest_api(stack) as client:
        client.delete(f"/connections/{conn_id}")


@pytest.mark.compat
def test_add_a_data_connector_test_it_and_see_the_exporter_run(stack: dict[str, Any], page: Any) -> None:
    from playwright.sync_api import expect

    url, fab, react_3_0 = stack["url"], stack["fab"], stack["react_3_0"]
    secret = stack["key"]["SecretAccessKey"]
    dag = exporter_dag("s3-demo")
    forget_connection(stack, "my-s3")  # a stack given by STRM_UI_STACK may hold one from an earlier run

    # log in (the password is the one `make up` prints: the simple auth manager's, or Airflow 2's FAB user)
    page.goto(url)
    expect(page.get_by_role("button", name="Sign In")).to_be_visible()
    shot(page, stack, "01-login")
    page.get_by_label("Username").fill(stack["user"])
    page.get_by_label("Password").fill(stack["password"])
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url(f"{url}/home" if fab else f"{url}/")

    # Admin -> Connections -> Add Connection, of the provider's type (Airflow 2: a page, Airflow 3: a dialog)
    if fab:
        page.get_by_role("link", name="Admin").click()
        page.get_by_role("link", name="Connections").click()
    else:
        page.get_by_role("button", name="Admin").click()
        page.get_by_role("menuitem", name="Connections").click()
    expect(page.get_by_role("row").filter(has_text="strm_kafka_default")).to_be_visible()
    if fab:
        page.get_by_role("link", name="Add").click()  # "Add a new record"
        form = page.locator("form#model_form")
        form.get_by_label("Connection Id").fill("my-s3")
        form.locator("select#conn_type").select_option(label="STRM AWS S3")
    else:
        page.get_by_role("button", name="Add Connection").click()
        form = page.get_by_role("dialog")
        form.locator("input[name=connection_id]").fill("my-s3")
        form.get_by_role("combobox").click()
        page.keyboard.type("STRM AWS S3")
        page.keyboard.press("Enter")
    # Airflow 3.0 shows the standard fields under their own names, without the provider's labels
    key_label, secret_label = ("Login", "Password") if react_3_0 else ("AWS access key ID", "AWS secret access key")
    for label in (key_label, secret_label):
        expect(form.get_by_text(label, exact=True)).to_be_visible()
    if not react_3_0:  # each field says what leaving it empty means
        expect(form.get_by_placeholder("AKIA... (empty: the worker's own AWS identity)")).to_be_visible()
        both_empty = "(or Credentials JSON below; both empty: the AWS default credential chain)"
        expect(form.get_by_placeholder(both_empty)).to_be_visible()
    form.get_by_label(key_label, exact=True).fill(stack["key"]["AccessKeyId"])
    form.get_by_label(secret_label, exact=True).fill(secret)
    shot(page, stack, "02-add-connection-standard-fields")
    extra = {"bucket": "strmprivacy-export-demo", "endpoint_url": stack["s3_url"], "test_prefix": "events"}
    if react_3_0:  # only the Extra Fields JSON holds the provider's settings
        expect(form.get_by_role("button", name="Extra Fields", exact=True)).to_have_count(0)
        form.get_by_role("button", name="Extra Fields JSON", exact=True).click()
        editor = form.locator(".cm-content")
        editor.click()
        page.keyboard.press("ControlOrMeta+a")
        page.keyboard.press("Delete")
        editor.fill(json.dumps(extra))
        form.locator("input[name=connection_id]").click()  # leaving the editor formats the JSON
        shot(page, stack, "03-add-connection-extra-json")
    if not fab and not react_3_0:  # Airflow 3 folds the provider's fields under "Extra Fields"
        form.get_by_role("button", name="Extra Fields", exact=True).click()
    if not react_3_0:
        labels = ("Bucket", "Region", "Endpoint URL", "Role ARN", "Server-side encryption", "KMS key")
        for label in (*labels, "Credentials JSON", "Test prefix"):
            expect(form.get_by_text(re.compile(rf"^\s*{label}\s*$"))).to_be_visible()
        # every choice shows a value: "none" for no server-side encryption, never an empty "null"
        expect(form.get_by_text("null", exact=True).filter(visible=True)).to_have_count(0)  # not the folded JSON
    if fab:  # text fields, their choices checked on Save; Extra stays shown, as Airflow 2's Test button needs it
        expect(form.get_by_text(re.compile(r"^\s*Extra\s*$"))).to_be_visible()
        expect(form.get_by_label("Server-side encryption")).to_have_value("none")
        expect(form.get_by_label("Credentials JSON")).to_have_attribute("type", "password")
    if not react_3_0:
        for name, value in extra.items():
            form.locator(f"#extra__strm_s3__{name}" if fab else f"input[name=element_{name}]").fill(value)
        shot(page, stack, "03-add-connection-extra-fields")

    wrote = re.compile(r"^Wrote s3://strmprivacy-export-demo/events/\.strm_test_\S+, as arn:aws:iam::\d{12}:user/\S+$")

    def tested(send: Any) -> None:
        """Test: the provider writes the empty validation file with the least-privilege key, and says who wrote it."""
        before = {k for k in bucket_keys(stack) if is_test_object(k)}
        status, result = send()
        assert status == 200 and result["status"] is True and wrote.search(result["message"]), result
        new = {k for k in bucket_keys(stack) if is_test_object(k)} - before
        assert len(new) == 1 and next(iter(new)).startswith("events/.strm_test_")

    def press_test(button: Any) -> None:
        def send() -> tuple[int, Any]:
            with page.expect_response(lambda r: r.url.endswith("/connections/test")) as reply:
                button.click()
            return reply.value.status, reply.value.json()

        tested(send)
        expect(page.get_by_text(re.compile(r"Wrote s3://strmprivacy-export-demo/events/\.strm_test_"))).to_be_visible()

    if fab:  # Airflow 2 tests what the form holds, before it is saved
        press_test(form.get_by_role("button", name="Test"))
        shot(page, stack, "04-connection-test-success")
        form.get_by_role("button", name="Save").click()
        page.wait_for_url(re.compile(r"/connection/list/"))
    else:
        form.get_by_role("button", name="Save").click()
        expect(form).to_be_hidden()
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="my-s3", exact=True))
    expect(row).to_be_visible()
    assert secret not in page.content()
    if react_3_0:  # no Test button: the REST API's test of the connection as saved (it uses only what it is sent)
        expect(row.get_by_role("button", name="Test Connection")).to_have_count(0)
        expect(page.get_by_role("button", name=re.compile("^Test"))).to_have_count(0)
        shot(page, stack, "04-connection-saved-no-test-button")
        with rest_api(stack) as client:
            saved = client.get("/connections/my-s3").json()
            assert saved["conn_type"] == "strm_s3" and json.loads(saved["extra"]) == extra, saved
            body = {
                "connection_id": "my-s3",
                "conn_type": "strm_s3",
                "login": saved["login"],
                "password": secret,  # the API shows it masked
                "extra": saved["extra"],
            }

            def send() -> tuple[int, Any]:
                reply = client.post("/connections/test", json=body)
                return reply.status_code, reply.json()

            tested(send)
    elif not fab:  # Airflow 3 tests a saved connection, from its row
        press_test(row.get_by_role("button", name="Test Connection"))
        expect(page.get_by_text("Test Connection Successful")).to_be_visible()
        page.wait_for_timeout(800)  # let the toast finish fading in, for the screenshot only
        shot(page, stack, "04-connection-test-success")
        assert secret not in page.content()

    # the exporter's DAG: a successful scheduled run, and the Asset (Airflow 2: Dataset) events it created
    page.get_by_role("link", name="DAGs" if fab else "Dags", exact=True).click()
    page.get_by_role("link", name=dag, exact=True).first.click()
    page.wait_for_url(re.compile(f"/dags/{dag}"))
    if fab:
        success = page.get_by_role("row").filter(has_text="Total success")
        expect(success).to_contain_text(re.compile(r"Total success\s*[1-9]"))
    else:
        expect(page.get_by_role("heading", name="Latest Run").first).to_be_visible()
        expect(page.get_by_text("s3://strmprivacy-export-demo/events").first).to_be_visible()
        page.get_by_role("link", name="Runs", exact=True).click()
        expect(page.get_by_role("row").filter(has_text="success").first).to_be_visible()
    shot(page, stack, "05-exporter-dag-runs")
    if fab:
        page.get_by_role("link", name="Datasets", exact=True).click()
        page.wait_for_url(re.compile(r"/datasets"))
        page.get_by_text("s3://strmprivacy-export-demo/events").first.click()
        # produced by the export task, scheduling the downstream DAG, with an event
        expect(page.get_by_role("link", name=f"{dag}.export", exact=True)).to_be_visible()
        expect(page.get_by_role("link", name="example_strm_downstream", exact=True)).to_be_visible()
        expect(page.get_by_text(re.compile(r"^Triggered Dag Runs")).first).to_be_visible()
    else:
        page.get_by_role("link", name="Assets").click()
        page.wait_for_url(re.compile(r"/assets"))
        asset_row = page.get_by_role("row").filter(has_text="s3://strmprivacy-export-demo/events")
        expect(asset_row).to_be_visible()
        expect(asset_row).to_contain_text(re.compile(r"1 Dag.*1 Task"))  # scheduled: the downstream; produced: export
    shot(page, stack, "06-assets")


def test_chromium_is_debians_and_no_browser_was_downloaded() -> None:
    """The browser is the system package, never a ``playwright install`` download."""
    assert shutil.which("chromium") == CHROMIUM
    assert not (Path.home() / ".cache" / "ms-playwright").exists()
