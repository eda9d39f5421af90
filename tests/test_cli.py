"""The ``strm`` command line, run as a subprocess against a real Airflow metadata DB and a real api-server.

Storage and Kafka are the real test servers (moto with IAM enforced, Apache Kafka). Every
output of every command is checked for the credentials the test handed it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from devstack import free_port, running
from strm_provider.naming import is_test_object
from strm_provider.version_compat import AIRFLOW_V_3_0_PLUS
from tests.exporting import connections, events_in, exporter_dag, exporter_group, load_dag, run_exporter

BIN = Path(sys.executable).parent
STRM = str(BIN / "strm")
#: Secrets handed to the CLI in this session; none may ever appear in an output.
SECRETS: set[str] = set()
API_PASSWORD = "api-pw-" + uuid.uuid4().hex
SECRETS.add(API_PASSWORD)
#: the api-server's JWT secret: a process of this session that runs tasks through its Execution API signs
#: their tokens with it
JWT_SECRET = uuid.uuid4().hex + uuid.uuid4().hex  # 64 bytes, as HS512 wants
#: the tokens' issuer: Airflow 3.0 leaves it unset by default, which the PyJWT it installs with refuses
JWT_ISSUER = "strm-tests"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def base_env() -> dict[str, str]:
    env = os.environ.copy()
    # the venv is compiled at install; the project's own files may write their bytecode even where the
    # environment says not to
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for key in [k for k in env if k.startswith("AIRFLOW_CONN_") or k.startswith("STRM_AIRFLOW")]:
        del env[key]
    return env


@dataclass
class Result:
    args: list[str]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def error_line(self) -> str:
        """The one-line error: bad input exits 2 with ``Error: Invalid value for '<ARG>': ...``."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected a one-line error, got: {self.err!r}"
        assert lines[0].startswith("Error: "), lines[0]
        return lines[0]


@dataclass
class Cli:
    """Runs ``strm`` with a given environment (local DB or remote api-server)."""

    env: dict[str, str]
    outputs: list[str] = field(default_factory=list)

    def __call__(self, *args: str, ok: bool = True, timeout: float = 120) -> Result:
        proc = subprocess.run([STRM, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        res = Result(list(args), proc.returncode, proc.stdout, proc.stderr)
        for secret in SECRETS:
            assert secret not in proc.stdout + proc.stderr, f"a secret appeared in the output of strm {args}"
        assert "Traceback" not in proc.stderr, proc.stderr
        if ok:
            assert proc.returncode == 0, f"strm {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
        return res

    def bad(self, *args: str, code: int = 2) -> str:
        res = self(*args, ok=False)
        assert res.code == code, f"strm {' '.join(args)}: exit {res.code}, expected {code}: {res.err}"
        assert res.out == ""
        return res.error_line()


# ----- environments -------------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A fresh metadata DB (a copy of the session's migrated one, without connections) and exporters folder."""
    db = Path(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///"))
    copy = tmp_path / "airflow.db"
    with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as conn:
        conn.execute("DELETE FROM connection")
    exporters = tmp_path / "exporters"
    exporters.mkdir()
    return {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{copy}", "STRM_EXPORTERS_DIR": str(exporters)}


@pytest.fixture
def strm(home: dict[str, str]) -> Cli:
    """``strm`` against a fresh local metadata DB."""
    return Cli({**base_env(), **home})


@pytest.fixture
def session_strm() -> Cli:
    """``strm`` against the session's DB and exporters folder: what ``dag.test()`` in this process reads."""
    return Cli(base_env())


@dataclass
class ApiServer:
    url: str
    log: Path
    token: str


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """Airflow's REST API on loopback over the session DB, with a known user: ``airflow api-server`` (API v2,
    simple auth manager, JWT) on Airflow 3; ``airflow webserver`` (API v1, FAB users, basic auth) on Airflow 2."""
    work = tmp_path_factory.mktemp("api")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / "api-server.log"
    if AIRFLOW_V_3_0_PLUS:
        passwords = work / "passwords.json"
        passwords.write_text(json.dumps({"strm": API_PASSWORD}))
        env = {
            **base_env(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "strm:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
            "AIRFLOW__API_AUTH__JWT_ISSUER": JWT_ISSUER,
            "AIRFLOW__API__BASE_URL": url,
        }
        cmd = [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    else:
        env = {
            **base_env(),
            "AIRFLOW__API__AUTH_BACKENDS": "airflow.providers.fab.auth_manager.api.auth.backend.basic_auth",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__WEBSERVER__SECRET_KEY": JWT_SECRET,
        }
        user = ["--username", "strm", "--password", API_PASSWORD, "--role", "Admin", "--email", "strm@example.com"]
        subprocess.run(
            [str(BIN / "airflow"), "users", "create", *user, "--firstname", "s", "--lastname", "s"],
            check=True, capture_output=True, env=env, timeout=300,
        )  # fmt: skip
        cmd = [str(BIN / "airflow"), "webserver", "--hostname", "127.0.0.1", "--port", str(port), "--workers", "1"]
        cmd += ["--pid", str(work / "webserver.pid")]  # not AIRFLOW_HOME's: each module of the session starts one
    with running(cmd, log=log, port=port, timeout=180, env=env):
        if AIRFLOW_V_3_0_PLUS:
            resp = requests.post(f"{url}/auth/token", json={"username": "strm", "password": API_PASSWORD}, timeout=30)
            resp.raise_for_status()
            token = resp.json()["access_token"]
            SECRETS.add(token)
        else:
            token = ""  # Airflow 2's API takes the user and password with every request
            _wait_for_api_v1(url)
        yield ApiServer(url, log, token)
    text = log.read_text(errors="replace")
    for secret in SECRETS:
        assert secret not in text, "a secret appeared in the api-server log"


def _wait_for_api_v1(url: str, timeout: float = 180) -> None:
    """Until the webserver's gunicorn worker answers (its port opens before the worker has loaded the app)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/api/v1/version", auth=("strm", API_PASSWORD), timeout=30).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the webserver's API did not answer"
        time.sleep(1)


@pytest.fixture
def remote(api_server: ApiServer, tmp_path: Path) -> Cli:
    """``strm --airflow-url`` with a user/password (the CLI fetches its own JWT)."""
    exporters = tmp_path / "exporters"
    exporters.mkdir()
    env = {
        **base_env(),
        "STRM_AIRFLOW_URL": api_server.url,
        "STRM_AIRFLOW_USERNAME": "strm",
        "STRM_AIRFLOW_PASSWORD": API_PASSWORD,
        "STRM_EXPORTERS_DIR": str(exporters),
        # the local DB must not be what answers: point it at nothing
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'absent' / 'no.db'}",
    }
    return Cli(env)


# ----- helpers ------------------------------------------------------------------------------------
def aws_credentials(tmp_path: Path, s3_target: Any, prefix: str, *, secret: str | None = None, **policy: Any) -> Path:
    """What ``aws iam create-access-key`` prints, for a user holding only the README's policy on ``prefix``
    (``policy``: what else it grants, e.g. the compressed files' ``endings``)."""
    user = s3_target.user_for(prefix, **policy)
    SECRETS.add(user["SecretAccessKey"])
    path = tmp_path / f"s3-{uuid.uuid4().hex[:6]}.json"
    path.write_text(
        json.dumps(
            {
                "AccessKey": {
                    "UserName": user["UserName"],
                    "AccessKeyId": user["AccessKeyId"],
                    "Status": "Active",
                    "SecretAccessKey": secret or user["SecretAccessKey"],
                    "CreateDate": "2021-03-26T09:56:30Z",
                }
            }
        )
    )
    return path


def gcs_key(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    SECRETS.add(pem.splitlines()[5])
    path = tmp_path / "gcs.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "demo",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "exporter@demo.iam.gserviceaccount.com",
                "client_id": "1",
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return path


def stored_row(env: dict[str, str], conn_id: str) -> dict[str, Any] | None:
    """The raw row of the connection table (what an attacker reading the DB file sees)."""
    db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM connection WHERE conn_id = ?", (conn_id,)).fetchone()
    return dict(row) if row else None


def s3_connector(
    strm: Cli, tmp_path: Path, s3_target: Any, name: str, prefix: str, *extra: str, **policy: Any
) -> Result:
    creds = aws_credentials(tmp_path, s3_target, prefix, **policy)
    return strm(
        "create",
        "data-connector",
        "s3",
        name,
        s3_target.bucket,
        f"--credentials-file={creds}",
        "--endpoint-url",
        s3_target.endpoint,
        "--test-prefix",
        prefix,
        *extra,
    )


def add_kafka(strm: Cli, kafka: Any, conn_id: str = "strm_kafka_default") -> None:
    """The Kafka connection, as the README adds it (``airflow connections add``)."""
    subprocess.run(
        [
            str(BIN / "airflow"),
            "connections",
            "add",
            conn_id,
            "--conn-type",
            "strm_kafka",
            "--conn-host",
            kafka.bootstrap,
        ],
        check=True,
        capture_output=True,
        env=strm.env,
    )


# ----- data connectors ----------------------------------------------------------------------------
@pytest.mark.compat
def test_s3_connector_is_validated_stored_encrypted_and_shown_without_secrets(
    strm: Cli, tmp_path: Path, s3_target: Any
) -> None:
    prefix = unique("dc")
    res = s3_connector(strm, tmp_path, s3_target, "my-s3", prefix)
    assert res.json() == {"ref": {"name": "my-s3"}, "s3Bucket": {"bucketName": s3_target.bucket}}
    probes = [k for k in s3_target.objects(prefix) if is_test_object(k)]
    assert len(probes) == 1 and probes[0].startswith(f"{prefix}/.strm_test_")
    assert s3_target.objects(prefix)[probes[0]] == b""

    assert strm("get", "data-connector", "my-s3").json() == res.json()
    assert strm("list", "data-connectors", "-o", "json").json() == {"dataConnectors": [res.json()]}
    table = strm("list", "data-connectors").out.splitlines()
    assert table[0].split() == ["NAME", "TYPE", "BUCKET/CONTAINER", "STORAGE", "ACCOUNT"]
    assert table[1].split() == ["my-s3", "s3", s3_target.bucket]

    row = stored_row(strm.env, "my-s3")
    assert row and row["conn_type"] == "strm_s3" and row["is_encrypted"] and row["is_extra_encrypted"]
    user = s3_target.user_for(prefix)
    assert user["SecretAccessKey"] not in json.dumps(row)


def test_failed_validation_says_why_and_creates_nothing(strm: Cli, tmp_path: Path, s3_target: Any) -> None:
    prefix = unique("dc")
    wrong = "wrong-secret-" + uuid.uuid4().hex
    SECRETS.add(wrong)
    creds = aws_credentials(tmp_path, s3_target, prefix, secret=wrong)
    args = [
        "create",
        "data-connector",
        "s3",
        "bad-s3",
        s3_target.bucket,
        f"--credentials-file={creds}",
        "--endpoint-url",
        s3_target.endpoint,
        "--test-prefix",
        prefix,
    ]
    line = strm.bad(*args, code=1)
    assert "data connector 'bad-s3'" in line and "SignatureDoesNotMatch" in line and "nothing was created" in line
    # the policy only allows the prefix: validating at the bucket root is refused
    creds = aws_credentials(tmp_path, s3_target, prefix)
    line = strm.bad(*args[:-2], "--credentials-file", str(creds), code=1)
    assert "AccessDenied" in line
    assert stored_row(strm.env, "bad-s3") is None
    assert "no data connector named 'bad-s3'" in strm.bad("get", "data-connector", "bad-s3")
    assert not [k for k in s3_target.objects(prefix) if is_test_object(k)]


def test_s3_compatible_credentials_are_detected(strm: Cli, tmp_path: Path, s3_target: Any) -> None:
    prefix = unique("compat")
    user = s3_target.user_for(prefix)
    SECRETS.add(user["SecretAccessKey"])
    creds = tmp_path / "s3.json"
    creds.write_text(
        json.dumps(
            {
                "url": s3_target.endpoint,
                "accessKey": user["AccessKeyId"],
                "secretKey": user["SecretAccessKey"],
                "api": "s3v4",
                "path": "path",
            }
        )
    )
    res = strm(
        "create",
        "data-connector",
        "s3",
        "compat",
        s3_target.bucket,
        f"--credentials-file={creds}",
        "--region",
        "eu-west-1",
        "--test-prefix",
        prefix,
    )
    assert res.json() == {"ref": {"name": "compat"}, "s3Bucket": {"bucketName": s3_target.bucket}}
    row = stored_row(strm.env, "compat")
    assert row and row["conn_type"] == "strm_s3_compatible" and row["host"] == s3_target.endpoint
    assert [k for k in s3_target.objects(prefix) if is_test_object(k)]


def test_gcs_and_azure_connectors_have_the_documented_shapes(strm: Cli, tmp_path: Path) -> None:
    key = gcs_key(tmp_path)
    gcs = strm(
        "create",
        "data-connector",
        "gcs",
        "my-gcs",
        "strmprivacy-export-demo",
        f"--credentials-file={key}",
        "--no-validate",
    )
    assert gcs.json() == {
        "ref": {"name": "my-gcs"},
        "googleCloudStorageBucket": {"bucketName": "strmprivacy-export-demo"},
    }
    secret = "azure-secret-" + uuid.uuid4().hex
    SECRETS.add(secret)
    azure = strm(
        "create",
        "data-connector",
        "azure-blob-storage",
        "azure",
        "strmprivacy-export-demo",
        "--storage-account-uri",
        "https://foo.blob.core.windows.net",
        "--tenant-id",
        "t-1",
        "--client-id",
        "c-1",
        "--client-secret",
        secret,
        "--no-validate",
    )
    assert azure.json() == {
        "ref": {"name": "azure"},
        "azureBlobStorageContainer": {
            "storageAccountUri": "https://foo.blob.core.windows.net",
            "containerName": "strmprivacy-export-demo",
        },
    }
    listed = strm("list", "data-connectors", "-o", "json").json()["dataConnectors"]
    assert listed == [azure.json(), gcs.json()]
    assert stored_row(strm.env, "my-gcs")["conn_type"] == "strm_gcs"
    assert stored_row(strm.env, "azure")["conn_type"] == "strm_azure_blob"
    assert "azure-blob-storage" in strm("list", "data-connectors").out


def test_a_connector_made_in_the_ui_without_its_container_is_listed_with_the_reason(strm: Cli) -> None:
    """A data connection typed in by hand (the UI, ``airflow connections add``) may lack a field the CLI
    would have asked for: ``strm list`` still lists every connector and says what is wrong with that one."""
    subprocess.run(
        [
            str(BIN / "airflow"),
            "connections",
            "add",
            "hand-made",
            "--conn-type",
            "strm_azure_blob",
            "--conn-host",
            "foo",
        ],
        check=True,
        capture_output=True,
        env=strm.env,
    )
    [listed] = strm("list", "data-connectors", "-o", "json").json()["dataConnectors"]
    assert listed["ref"] == {"name": "hand-made"}
    assert "hand-made" in listed["error"] and "container" in listed["error"]
    row = next(line for line in strm("list", "data-connectors").out.splitlines() if "hand-made" in line)
    assert "container" in row


def test_bad_connector_input_exits_2_naming_the_argument(strm: Cli, tmp_path: Path, s3_target: Any) -> None:
    creds = aws_credentials(tmp_path, s3_target, "")
    malformed = tmp_path / "bad.json"
    malformed.write_text('{"AccessKey": ')
    key = gcs_key(tmp_path)
    base = ["create", "data-connector"]
    cases = {
        (*base, "ftp", "x", "bucket", f"--credentials-file={creds}"): "'TYPE'",
        (*base, "s3", "x", "bucket", "--credentials-file", str(tmp_path / "missing.json")): "'--credentials-file'",
        (*base, "s3", "x", "bucket", f"--credentials-file={malformed}"): "'--credentials-file'",
        (*base, "s3", "x", "bucket", f"--credentials-file={key}"): "'--credentials-file'",
        (*base, "gcs", "x", "bucket", f"--credentials-file={creds}"): "'--credentials-file'",
        (*base, "s3", "bad name!", "bucket", f"--credentials-file={creds}"): "'NAME'",
        (*base, "s3", "x", "Bad_Bucket", f"--credentials-file={creds}"): "'BUCKET'",
        (*base, "s3", "x", "bucket", f"--credentials-file={creds}", "--test-prefix", "a/../b"): "'--test-prefix'",
        (*base, "azure-blob-storage", "x", "c1", "--storage-account-uri", "https://a.b", "--client-secret", "s"): (
            "'--tenant-id'"
        ),
        (
            *base,
            "azure-blob-storage",
            "x",
            "c1",
            "--storage-account-uri",
            "foo",
            "--tenant-id",
            "t",
            "--client-id",
            "c",
            "--client-secret",
            "s",
        ): "'--storage-account-uri'",
        (*base, "gcs", "x", "bucket", f"--credentials-file={key}", "--tenant-id", "t"): "'--tenant-id'",
        ("get", "data-connector", "nope"): "'NAME'",
        ("delete", "data-connector", "nope"): "'NAME'",
        ("delete", "batch-exporter", "nope"): "'NAME'",
        ("get", "batch-exporter", "nope"): "'NAME'",
    }
    for args, argument in cases.items():
        line = strm.bad(*args)
        assert f"Invalid value for {argument}" in line, (args, line)
    # no credentials file: AWS S3 as the worker's own identity, and here there is none to find
    strm.env.update({"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull})
    strm.env.update({"AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    line = strm.bad(*base, "s3", "x", "bucket", "--endpoint-url", s3_target.endpoint, code=1)
    assert "validation of data connector 'x' failed, nothing was created" in line
    assert "no AWS credentials: the connection holds no key, and the default credential chain" in line
    assert "expected the output of `aws iam create-access-key`" not in strm.bad(
        *base, "s3", "x", "bucket", f"--credentials-file={key}"
    )
    assert "service-account key" in strm.bad(*base, "gcs", "x", "bucket", f"--credentials-file={creds}")
    # a duplicate name
    strm(*base, "gcs", "dup", "bucket", f"--credentials-file={key}", "--no-validate")
    assert "already exists" in strm.bad(*base, "gcs", "dup", "bucket", f"--credentials-file={key}", "--no-validate")
    assert strm("list", "data-connectors", "-o", "json").json()["dataConnectors"] == [
        {"ref": {"name": "dup"}, "googleCloudStorageBucket": {"bucketName": "bucket"}}
    ]


# ----- batch exporters ----------------------------------------------------------------------------
@pytest.mark.compat
def test_batch_exporter_pins_end_offsets_writes_yaml_and_has_the_documented_shape(
    strm: Cli, tmp_path: Path, s3_target: Any, kafka: Any
) -> None:
    stream = kafka.create_topic(unique("demo"), partitions=3)
    kafka.produce(stream, [{"n": i} for i in range(7)])
    add_kafka(strm, kafka)
    prefix = unique("events")
    # the README's policy for every file ending: one exporter below writes .jsonl.zst
    s3_connector(strm, tmp_path, s3_target, "s3", prefix, endings=(".jsonl", ".jsonl.gz", ".jsonl.zst"))
    res = strm("create", "batch-exporter", stream, "--path-prefix", prefix)  # the only connector: no --data-connector
    assert res.json() == {
        "ref": {"name": f"s3-{stream}"},
        "streamRef": {"name": stream},
        "dataConnectorRef": {"name": "s3"},
        "interval": "60s",
        "pathPrefix": prefix,
        "assetUri": f"s3://{s3_target.bucket}/{prefix}",  # every field of the YAML: what the file says
    }
    assert kafka.committed(exporter_group(f"s3-{stream}"), stream) == kafka.end_offsets(stream)
    assert len([k for k in s3_target.objects(prefix) if is_test_object(k)]) == 2  # connector + exporter

    folder = Path(strm.env["STRM_EXPORTERS_DIR"])
    assert sorted(p.name for p in folder.iterdir()) == [f"s3-{stream}.yaml"]
    data = yaml.safe_load((folder / f"s3-{stream}.yaml").read_text())
    assert data == {
        "name": f"s3-{stream}",
        "stream": stream,
        "data_connector": "s3",
        "path_prefix": prefix,
        "interval": "60s",
        "asset_uri": f"s3://{s3_target.bucket}/{prefix}",
    }

    named = strm(
        "create",
        "batch-exporter",
        stream,
        "--data-connector",
        "s3",
        "--name",
        "five-minutes",
        "--interval",
        "300",
        "--path-prefix",
        prefix,
        "--include-existing-events",
        "--partition-sets",
        "2",
    )
    assert named.json()["interval"] == "300s" and named.json()["ref"] == {"name": "five-minutes"}
    assert (named.json()["includeExistingEvents"], named.json()["partitionSets"]) == (True, 2)
    assert kafka.committed(exporter_group("five-minutes"), stream) == dict.fromkeys(range(3))
    assert strm("get", "batch-exporter", "five-minutes").json() == named.json()
    listed = strm("list", "batch-exporters", "-o", "json").json()
    assert listed == {"batchExporters": [named.json(), res.json()]}  # by name
    table = strm("list", "batch-exporters").out.splitlines()
    assert table[0].split() == [
        "NAME", "STREAM", "DATA", "CONNECTOR", "INTERVAL", "PATH", "PREFIX", "VALUE", "FORMAT", "FILE", "FORMAT",
        "COMPRESSION", "FORMAT",
    ]  # fmt: skip
    assert table[1].split() == ["five-minutes", stream, "s3", "300s", prefix, "json", "jsonl", "none", "value"]

    # the file layout options: a templated prefix (validated in its fixed part), compression, envelopes
    hourly = strm(
        "create",
        "batch-exporter",
        stream,
        "--data-connector",
        "s3",
        "--name",
        "hourly",
        "--path-prefix",
        prefix + "/dt={date}/hour={hour}",
        "--compression",
        "zstd",
        "--format",
        "envelope",
    ).json()
    assert hourly["pathPrefix"] == prefix + "/dt={date}/hour={hour}"
    assert (hourly["compression"], hourly["format"]) == ("zstd", "envelope")
    assert strm("get", "batch-exporter", "hourly").json() == hourly
    assert strm("get", "batch-exporter", "hourly", "-o", "table").out.split()[-2:] == ["zstd", "envelope"]
    probes = [k for k in s3_target.objects(prefix) if is_test_object(k)]
    flat = [k for k in probes if k.count("/") == prefix.count("/") + 1]
    assert len(flat) == 3 and all(k.endswith(".jsonl") for k in flat)  # the connector's, the plain exporters'
    # the templated, compressed exporter's: this hour's folder, its ending
    [dated] = [k for k in probes if k not in flat]
    assert re.match(rf"^{prefix}/dt=\d{{4}}-\d\d-\d\d/hour=\d\d/\.strm_test_[0-9a-f-]{{36}}\.jsonl\.zst$", dated), dated
    saved = yaml.safe_load((folder / "hourly.yaml").read_text())
    assert (saved["compression"], saved["format"], saved["asset_uri"]) == (
        "zstd", "envelope", f"s3://{s3_target.bucket}/{prefix}"
    )  # fmt: skip
    assert "unknown placeholder {minute}; allowed: {date}, {hour}" in strm.bad(
        "create", "batch-exporter", stream, "--data-connector", "s3", "--name", "x", "--path-prefix", "e/{minute}"
    )
    assert "'--compression'" in strm.bad("create", "batch-exporter", stream, "--compression", "lz4")
    strm("delete", "batch-exporter", "hourly")

    bad = ["create", "batch-exporter", stream, "--data-connector", "s3"]
    assert "'--interval'" in strm.bad(*bad, "--interval", "10x")
    assert "'--path-prefix'" in strm.bad(*bad, "--path-prefix", "../up")
    assert "'--name'" in strm.bad(*bad, "--path-prefix", prefix)  # s3-<stream> exists
    assert "'--name'" in strm.bad(*bad, "--name", "no spaces")
    assert "'--data-connector'" in strm.bad("create", "batch-exporter", stream, "--data-connector", "nope")
    assert "'STREAM'" in strm.bad(
        "create", "batch-exporter", "no-such-stream", "--data-connector", "s3", "--path-prefix", prefix
    )
    assert "'--kafka-connection'" in strm.bad(*bad, "--name", "x2", "--kafka-connection", "nope")
    denied = strm.bad(*bad, "--name", "x3", "--path-prefix", "elsewhere", code=1)
    assert "AccessDenied" in denied and "nothing was created" in denied
    assert sorted(p.name for p in folder.iterdir()) == ["five-minutes.yaml", f"s3-{stream}.yaml"]

    s3_connector(strm, tmp_path, s3_target, "other", prefix)
    assert "'--data-connector'" in strm.bad("create", "batch-exporter", stream, "--name", "x4")


#: a bad value of a field, with what its message must say however the exporter is written
BAD_FIELDS = {
    "interval": ("10x", "expected a duration like 30s, 5m or 1h, got '10x'"),
    "path_prefix": ("../up", "must not contain '..', '.' or empty segments ('//')"),
    "bucket": ("Not_A_Bucket", "expected a bucket or container name"),
    "kafka_connection": ("no spaces", "expected an Airflow connection id"),
    "stream": ("no spaces", "expected a Kafka topic name"),
}


def test_a_bad_field_gets_the_same_message_in_an_exporter_file_and_on_create(strm: Cli) -> None:
    """The exporter file's message and ``strm create batch-exporter``'s are one: the field's, from the model
    both are checked with, beside the field's name in the file and the option's on the command line."""
    folder = Path(strm.env["STRM_EXPORTERS_DIR"])
    for name, (value, says) in BAD_FIELDS.items():
        fields = {"stream": "clicks", "data_connector": "dc", name: value}
        (folder / "bad.yaml").write_text(yaml.safe_dump(fields))
        [invalid] = strm("list", "batch-exporters", "-o", "json").json()["invalidBatchExporters"]
        message = invalid["error"].removeprefix(f"field '{name}': ")
        assert says in message and message != invalid["error"], (name, invalid["error"])
        option = [] if name == "stream" else [f"--{name.replace('_', '-')}", value]
        line = strm.bad("create", "batch-exporter", fields["stream"], "--data-connector", "dc", *option)
        hint = "'STREAM'" if name == "stream" else f"'--{name.replace('_', '-')}'"
        assert line == f"Error: Invalid value for {hint}: {message}", name
    assert sorted(p.name for p in folder.iterdir()) == ["bad.yaml"]  # nothing created


def test_delete_refuses_with_dependents_then_recursive(strm: Cli, tmp_path: Path, s3_target: Any, kafka: Any) -> None:
    stream = kafka.create_topic(unique("del"), partitions=1)
    add_kafka(strm, kafka)
    prefix = unique("del")
    s3_connector(strm, tmp_path, s3_target, "s3", prefix)
    for name in ("a", "b", "c"):
        strm("create", "batch-exporter", stream, "--name", name, "--path-prefix", prefix, "--no-validate")
    line = strm.bad("delete", "data-connector", "s3")
    assert "'NAME'" in line and "a, b, c" in line and "--recursive" in line
    assert "'NAME'" in strm.bad("delete", "batch-exporter", "a", "nope")  # nothing deleted
    assert len(strm("list", "batch-exporters", "-o", "json").json()["batchExporters"]) == 3

    assert strm("delete", "batch-exporter", "a").out == (
        "Batch Exporter has been deleted: a\nProgress record in Airflow has been deleted: a\n"
    )
    assert strm("delete", "data-connector", "s3", "--recursive").out == (
        "Data Connector and dependent entities have been deleted: s3 (batch exporters b, c)\n"
        "Progress record in Airflow has been deleted: b, c\n"
    )
    empty = strm("list", "batch-exporters")
    assert f"No batch exporters in {strm.env['STRM_EXPORTERS_DIR']}" in empty.err
    assert strm("list", "batch-exporters", "-o", "json").json() == {"batchExporters": []}
    assert strm("list", "data-connectors", "-o", "json").json() == {"dataConnectors": []}
    assert list(Path(strm.env["STRM_EXPORTERS_DIR"]).iterdir()) == []

    s3_connector(strm, tmp_path, s3_target, "lonely", prefix)
    assert strm("delete", "data-connector", "lonely").out == "Data Connector has been deleted: lonely\n"
    assert stored_row(strm.env, "lonely") is None


def test_simulate_random_events(strm: Cli, kafka: Any) -> None:
    stream = unique("sim")
    res = strm(
        "simulate",
        "random-events",
        stream,
        "--bootstrap-servers",
        kafka.bootstrap,
        "--count",
        "60",
        "--rate",
        "500",
        "--partitions",
        "3",
    )
    assert f"sent 60 events to stream '{stream}'" in res.err
    ends = kafka.end_offsets(stream)
    assert sorted(ends) == [0, 1, 2] and sum(ends.values()) == 60 and set(ends.values()) == {20}
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        stream, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    events = [json.loads(m.value) for m in consumer]
    consumer.close()
    assert len(events) == 60
    assert set(events[0]) >= {"strmMeta", "producerSessionId", "url", "customer", "abTests"}
    assert events[0]["strmMeta"]["schemaId"] == "clickstream"

    add_kafka(strm, kafka)  # through the Kafka connection, on the existing stream
    res = strm("simulate", "random-events", stream, "--count", "3", "--rate", "100")
    assert sum(kafka.end_offsets(stream).values()) == 63
    assert "'--rate'" in strm.bad("simulate", "random-events", stream, "--rate", "0")
    assert "'STREAM'" in strm.bad("simulate", "random-events", "bad/topic", "--bootstrap-servers", kafka.bootstrap)


def test_created_exporter_becomes_a_dag_that_exports(
    session_strm: Cli, tmp_path: Path, s3_target: Any, kafka: Any
) -> None:
    """Only what arrives after creation is exported (``--include-existing-events`` off)."""
    stream = kafka.create_topic(unique("e2e"), partitions=3)
    kafka.produce(stream, [{"before": i} for i in range(5)])
    name, prefix = unique("e2e-s3"), unique("events")
    with connections(strm_kafka_default=kafka.connection()):
        strm = Cli({**session_strm.env, "AIRFLOW_CONN_STRM_KAFKA_DEFAULT": json.dumps(kafka.connection())})
        try:
            s3_connector(strm, tmp_path, s3_target, name, prefix)
            res = strm("create", "batch-exporter", stream, "--data-connector", name, "--path-prefix", prefix)
            kafka.produce(stream, [{"after": i} for i in range(11)])
            path = Path(os.environ["STRM_EXPORTERS_DIR"]) / f"{res.json()['ref']['name']}.yaml"
            # the bucket's Asset, pinned in the file: parsing the DAG never looks the connector up
            assert yaml.safe_load(path.read_text())["asset_uri"] == f"s3://{s3_target.bucket}/{prefix}"
            dag = load_dag(exporter_dag(res.json()["ref"]["name"]))
            assert [outlet.uri for outlet in dag.get_task("export").outlets] == [f"s3://{s3_target.bucket}/{prefix}"]
            run = run_exporter(path)
            assert run.state == "success"
            events = events_in(s3_target.objects(prefix))
            assert sorted(e["after"] for e in events) == list(range(11))
        finally:
            strm("delete", "data-connector", name, "--recursive", ok=False)


def test_exporter_on_an_aws_connection_names_its_bucket(
    session_strm: Cli, tmp_path: Path, s3_target: Any, kafka: Any
) -> None:
    """An ``aws`` connection added with Airflow's CLI: the exporter names the bucket with --bucket, which is
    validated, written to the YAML and shown; without it, or with it on one of ours, a one-line error."""
    stream = kafka.create_topic(unique("aws-cli"), partitions=2)
    name, prefix = unique("aws-conn"), unique("aws-cli")
    conn = s3_target.aws_connection(prefix)
    strm = Cli({**session_strm.env, "AIRFLOW_CONN_STRM_KAFKA_DEFAULT": json.dumps(kafka.connection())})
    subprocess.run(
        [str(BIN / "airflow"), "connections", "add", name, "--conn-json", json.dumps(conn)],
        check=True, capture_output=True, env=strm.env,
    )  # fmt: skip
    try:
        create = ["create", "batch-exporter", stream, "--data-connector", name, "--path-prefix", prefix, "--name", name]
        assert "'--bucket'" in strm.bad(*create)
        assert "'--bucket'" in strm.bad(*create, "--bucket", "Not_A_Bucket")
        res = strm(*create, "--bucket", s3_target.bucket)
        assert res.json()["dataConnectorRef"] == {"name": name} and res.json()["bucket"] == s3_target.bucket
        assert [k for k in s3_target.objects(prefix) if k.startswith(f"{prefix}/.strm_test_")], "validated"
        path = Path(os.environ["STRM_EXPORTERS_DIR"]) / f"{name}.yaml"
        written = yaml.safe_load(path.read_text())
        assert written["bucket"] == s3_target.bucket
        assert written["asset_uri"] == f"s3://{s3_target.bucket}/{prefix}"
        kafka.produce(stream, [{"after": i} for i in range(7)])
        with connections(strm_kafka_default=kafka.connection(), **{name: conn}):
            assert run_exporter(path).state == "success"
        assert sorted(e["after"] for e in events_in(s3_target.objects(prefix))) == list(range(7))
        s3_connector(strm, tmp_path, s3_target, f"{name}-ours", prefix)
        ours = ["create", "batch-exporter", stream, "--data-connector", f"{name}-ours", "--name", unique("x")]
        assert "names its bucket itself" in strm.bad(*ours, "--bucket", s3_target.bucket)
    finally:
        strm("delete", "batch-exporter", name, ok=False)
        strm("delete", "data-connector", f"{name}-ours", ok=False)


# ----- against a remote Airflow (REST API v2) -----------------------------------------------------
def test_remote_airflow_through_the_rest_api(
    remote: Cli, api_server: ApiServer, tmp_path: Path, s3_target: Any, kafka: Any, session_strm: Cli
) -> None:
    name, prefix = unique("remote"), unique("remote")
    created = s3_connector(remote, tmp_path, s3_target, name, prefix)
    assert created.json() == {"ref": {"name": name}, "s3Bucket": {"bucketName": s3_target.bucket}}
    # stored in the remote Airflow's DB, encrypted, readable by the local CLI on the Airflow host
    row = stored_row(session_strm.env, name)
    assert row and row["conn_type"] == "strm_s3" and row["is_encrypted"]
    assert session_strm("get", "data-connector", name).json() == created.json()

    token_cli = Cli(
        {
            **{k: v for k, v in remote.env.items() if not k.startswith("STRM_AIRFLOW_")},
            "STRM_AIRFLOW_TOKEN": api_server.token,
        },
        remote.outputs,
    )
    token_cli.env["STRM_EXPORTERS_DIR"] = remote.env["STRM_EXPORTERS_DIR"]
    url = ["--airflow-url", api_server.url]
    assert created.json() in token_cli(*url, "list", "data-connectors", "-o", "json").json()["dataConnectors"]
    assert token_cli(*url, "get", "data-connector", name).json() == created.json()
    assert "already exists" in remote.bad(
        "create",
        "data-connector",
        "s3",
        name,
        s3_target.bucket,
        f"--credentials-file={aws_credentials(tmp_path, s3_target, prefix)}",
    )

    # a batch exporter: the Kafka connection is read through the API, validation runs on the server
    kafka_id = unique("kafka")
    add_kafka(session_strm, kafka, kafka_id)
    stream = kafka.create_topic(unique("remote"), partitions=2)
    probes = len([k for k in s3_target.objects(prefix) if is_test_object(k)])
    exp = remote(
        "create",
        "batch-exporter",
        stream,
        "--data-connector",
        name,
        "--path-prefix",
        prefix,
        "--kafka-connection",
        kafka_id,
    )
    assert exp.json()["dataConnectorRef"] == {"name": name}
    assert len([k for k in s3_target.objects(prefix) if is_test_object(k)]) == probes + 1
    assert kafka.committed(exporter_group(f"{name}-{stream}"), stream) == kafka.end_offsets(stream)
    denied = remote.bad(
        "create",
        "batch-exporter",
        stream,
        "--data-connector",
        name,
        "--path-prefix",
        "nope",
        "--kafka-connection",
        kafka_id,
        "--name",
        "denied",
        code=1,
    )
    assert "AccessDenied" in denied

    assert "--recursive" in remote.bad("delete", "data-connector", name)
    assert remote("delete", "data-connector", name, "--recursive").out.startswith("Data Connector and dependent")
    assert stored_row(session_strm.env, name) is None
    assert "'NAME'" in remote.bad("get", "data-connector", name)

    bad_token = Cli({**token_cli.env, "STRM_AIRFLOW_TOKEN": "not-a-token"})
    line = bad_token.bad(*url, "list", "data-connectors", code=1)
    assert "HTTP 401" in line or "HTTP 403" in line
    nobody = Cli({k: v for k, v in remote.env.items() if k not in ("STRM_AIRFLOW_USERNAME", "STRM_AIRFLOW_PASSWORD")})
    assert "STRM_AIRFLOW_TOKEN" in nobody.bad("list", "data-connectors", code=1)
    unreachable = Cli({**remote.env, "STRM_AIRFLOW_URL": f"http://127.0.0.1:{free_port()}"})
    assert "cannot reach" in unreachable.bad("list", "data-connectors", code=1)


@pytest.mark.compat
def test_remote_airflow_of_any_line_through_its_rest_api(
    remote: Cli, api_server: ApiServer, tmp_path: Path, s3_target: Any, session_strm: Cli
) -> None:
    """The same URL, user and password on every Airflow line: ``strm`` asks the server which REST API it has
    (v2 with a JWT from /auth/token on Airflow 3, v1 with HTTP basic auth on Airflow 2)."""
    name, prefix = unique("remote"), unique("remote")
    created = s3_connector(remote, tmp_path, s3_target, name, prefix)
    assert created.json() == {"ref": {"name": name}, "s3Bucket": {"bucketName": s3_target.bucket}}
    row = stored_row(session_strm.env, name)
    assert row and row["conn_type"] == "strm_s3" and row["is_encrypted"]
    assert created.json() in remote("list", "data-connectors", "-o", "json").json()["dataConnectors"]
    assert remote("get", "data-connector", name).json() == created.json()
    assert [line.split() for line in remote("list", "data-connectors").out.splitlines() if name in line] == [
        [name, "s3", s3_target.bucket]
    ]
    creds = aws_credentials(tmp_path, s3_target, prefix)
    assert "already exists" in remote.bad(
        "create", "data-connector", "s3", name, s3_target.bucket, f"--credentials-file={creds}"
    )
    remote("delete", "data-connector", name)
    assert stored_row(session_strm.env, name) is None
    assert "'NAME'" in remote.bad("get", "data-connector", name)

    wrong = Cli({**remote.env, "STRM_AIRFLOW_PASSWORD": "wrong-" + uuid.uuid4().hex})
    line = wrong.bad("list", "data-connectors", code=1)
    assert "HTTP 401" in line or "HTTP 403" in line, line
    nobody = Cli({k: v for k, v in remote.env.items() if k not in ("STRM_AIRFLOW_USERNAME", "STRM_AIRFLOW_PASSWORD")})
    assert "STRM_AIRFLOW_USERNAME" in nobody.bad("list", "data-connectors", code=1)
    unreachable = Cli({**remote.env, "STRM_AIRFLOW_URL": f"http://127.0.0.1:{free_port()}"})
    assert "cannot reach" in unreachable.bad("list", "data-connectors", code=1)


def test_help_lists_every_command() -> None:
    out = subprocess.run([STRM, "--help"], capture_output=True, text=True, env=base_env(), check=True).stdout
    for group in ("create", "list", "get", "delete", "simulate", "monitor", "logs", "install-dag"):
        assert re.search(rf"^\s+{group}\s", out, re.M)
    assert shutil.which("strm", path=str(BIN))
