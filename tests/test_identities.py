"""Keyless identities: a data connector without a key writes as the identity the worker already has.

AWS S3 through the default credential chain: a web identity token file exchanged with moto's STS
(EKS IRSA), and the container provider (what ECS task roles and EKS Pod Identity serve), a local
endpoint here handing out a moto STS role session; on top of it the connection's ``role_arn``. The
export writes under the README's minimal policy, held by the role.
Google Cloud Storage through Application Default Credentials: a service-account key file, and a
workload identity federation ``external_account`` config whose token the local token endpoint
exchanges; the emulator stores what is written.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from devstack import QuietHandler, serving
from devstack.gcs import CLIENT_EMAIL
from devstack.moto import minimal_policy
from strm_provider.hooks import storage_hook
from tests.exporting import connections, data_files, environ, events_in, exporter_group, run_exporter, write_exporter
from tests.faults.scenario import seq_events, unique

ACCOUNT = "123456789012"


def role(iam: Any, name: str, policy: dict[str, Any]) -> str:
    """An IAM role any principal may assume (its own policies decide what it may do), holding only ``policy``."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="only", PolicyDocument=json.dumps(policy))
    return str(arn)


@contextlib.contextmanager
def container_credentials(s3_target: Any, role_arn: str) -> Iterator[None]:
    """The worker's own identity, as a container credentials endpoint serves it: a session of ``role_arn``.

    Only ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` points at it; no key, profile or config file is around.
    """
    sts = s3_target.client("sts")

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="worker")["Credentials"]
            self.reply(
                200,
                {
                    "AccessKeyId": creds["AccessKeyId"],
                    "SecretAccessKey": creds["SecretAccessKey"],
                    "Token": creds["SessionToken"],
                    "Expiration": creds["Expiration"].isoformat(),
                },
            )

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    env = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{server.server_address[1]}/v2/credentials",
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
        # where role_arn is assumed: the SDKs' own setting, as for a private STS endpoint
        "AWS_ENDPOINT_URL_STS": s3_target.endpoint,
    }
    with serving(server, "container-credentials"), _environ(env):
        yield


#: what could hand the test process a static AWS identity, unset around each keyless test
STATIC_AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def _environ(values: dict[str, str]) -> AbstractContextManager[None]:
    """``values`` set and every static AWS key variable unset, for the block."""
    return environ(values, unset=STATIC_AWS)


def keyless(s3_target: Any, prefix: str, **extra: str) -> dict[str, Any]:
    return {
        "conn_type": "strm_s3",
        "extra": {"bucket": s3_target.bucket, "endpoint_url": s3_target.endpoint, "test_prefix": prefix, **extra},
    }


@pytest.mark.parametrize("assume", [False, True], ids=["worker-role", "worker-then-role_arn"])
def test_s3_without_a_key_writes_as_the_workers_identity(kafka: Any, s3_target: Any, assume: bool) -> None:
    """No key in the connection: the default chain's container role writes (or only assumes ``role_arn``,
    which writes); the Test button names the role session; the export writes every event, nothing else."""
    topic, prefix = kafka.create_topic(unique("keyless"), 2), unique("keyless")
    iam = s3_target.client("iam")
    writer = role(iam, unique("strm-writer"), minimal_policy(s3_target.bucket, prefix))
    if assume:  # the worker may do nothing but assume the writer role
        worker = role(iam, unique("airflow-worker"), {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": writer}]})  # fmt: skip
        conn = keyless(s3_target, prefix, role_arn=writer)
    else:
        worker, conn = writer, keyless(s3_target, prefix)
    kafka.produce(topic, seq_events(0, 300))
    with container_credentials(s3_target, worker), connections(strm_kafka_default=kafka.connection(), dc=conn):
        ok, message = storage_hook("dc").test_connection()
        assert ok, message
        written_as = writer.replace(":iam:", ":sts:").replace(":role/", ":assumed-role/")
        assert f", as {written_as}/" in message, message
        assert "SecretAccessKey" not in message and "Token" not in message
        path = write_exporter(stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True)
        assert run_exporter(path).state == "success"
    objects = s3_target.objects(prefix)
    assert sorted(e["seq"] for e in events_in(objects)) == list(range(300))
    assert len(data_files(objects)) == 1
    assert kafka.committed(exporter_group(path.stem), topic) == kafka.end_offsets(topic)


@contextlib.contextmanager
def web_identity(s3_target: Any, role_arn: str, token_file: Any) -> Iterator[list[dict[str, str]]]:
    """The worker's identity as EKS IRSA gives it: ``AWS_ROLE_ARN`` and a projected token file, which the
    SDK exchanges with STS AssumeRoleWithWebIdentity. Yields the exchanges (role and token) STS answered.

    That call is unsigned, and moto_server with IAM enforced answers unsigned calls with a 500 (it
    exempts only Cognito). STS is therefore reached through a local endpoint that signs each call with the
    admin key before passing it to moto, and records what it passed on.
    """
    from urllib.parse import parse_qs

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from devstack.moto import REGION

    admin = Credentials(s3_target.admin["AccessKeyId"], s3_target.admin["SecretAccessKey"])
    exchanges: list[dict[str, str]] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            request = AWSRequest(
                "POST", s3_target.endpoint + self.path, data=body,
                headers={"Content-Type": self.headers["Content-Type"]},
            )  # fmt: skip
            SigV4Auth(admin, "sts", REGION).add_auth(request)
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(request.url, data=body, headers=dict(request.headers), method="POST")
                ) as answer:
                    status, reply = answer.status, answer.read()
            except urllib.error.HTTPError as err:
                status, reply = err.code, err.read()
            if status == 200:
                exchanges.append({"action": form.get("Action", ""), "role": form.get("RoleArn", ""),
                                  "token": form.get("WebIdentityToken", "")})  # fmt: skip
            self.reply(status, reply, "text/xml")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    env = {
        "AWS_ROLE_ARN": role_arn,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_ROLE_SESSION_NAME": "airflow-worker",
        "AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{server.server_address[1]}",
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with serving(server, "sts-web-identity"), _environ(env):
        yield exchanges


def test_s3_without_a_key_writes_with_a_web_identity_token(kafka: Any, s3_target: Any, tmp_path: Any) -> None:
    """EKS IRSA: no key in the connection; the pod's projected token is exchanged for the role's session
    (AssumeRoleWithWebIdentity), which writes under the minimal policy the role holds."""
    topic, prefix = kafka.create_topic(unique("irsa"), 2), unique("irsa")
    writer = role(s3_target.client("iam"), unique("strm-irsa"), minimal_policy(s3_target.bucket, prefix))
    token = tmp_path / "token"  # what EKS projects into the pod, refreshed on disk
    token.write_text(f"eyJ.irsa-{topic}.sig")
    kafka.produce(topic, seq_events(0, 250))
    with (
        web_identity(s3_target, writer, token) as exchanges,
        connections(strm_kafka_default=kafka.connection(), dc=keyless(s3_target, prefix)),
    ):
        ok, message = storage_hook("dc").test_connection()
        assert ok, message
        written_as = writer.replace(":iam:", ":sts:").replace(":role/", ":assumed-role/")
        assert message.endswith(f", as {written_as}/airflow-worker"), message
        path = write_exporter(stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True)
        assert run_exporter(path).state == "success"
    assert exchanges and all(
        e == {"action": "AssumeRoleWithWebIdentity", "role": writer, "token": token.read_text()} for e in exchanges
    )
    objects = s3_target.objects(prefix)
    assert sorted(e["seq"] for e in events_in(objects)) == list(range(250))
    assert kafka.committed(exporter_group(path.stem), topic) == kafka.end_offsets(topic)


def test_s3_without_a_key_or_an_identity_says_so_in_one_line(s3_target: Any) -> None:
    """No key and nothing in the default chain: the cause names the connection, its type and what was tried."""
    env = {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
    }
    with _environ(env), connections(dc=keyless(s3_target, "nobody")):
        ok, message = storage_hook("dc").test_connection()
    assert not ok
    assert message.startswith("data connector 'dc' (strm_s3): GetBucketLocation of bucket ")
    assert "no AWS credentials: the connection holds no key, and the default credential chain" in message
    assert "\n" not in message


POOL = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/airflow/providers/k8s"


@pytest.mark.parametrize("source", ["service-account-file", "external-account"])
def test_gcs_without_a_key_writes_with_application_default_credentials(
    kafka: Any, gcs_target: Any, tmp_path: Any, source: str
) -> None:
    """No key in the connection: GOOGLE_APPLICATION_CREDENTIALS names a key file, or a workload identity
    federation config (a pod's projected token, exchanged at the token endpoint): the export writes."""
    topic, prefix = kafka.create_topic(unique("adc"), 2), unique("adc")
    config = tmp_path / "adc.json"
    if source == "service-account-file":
        config.write_text(json.dumps(gcs_target.keyfile()))
        identity = CLIENT_EMAIL
    else:
        subject = tmp_path / "token"  # what Kubernetes projects into the pod, refreshed on disk
        subject.write_text(f"eyJ.pod-{topic}.sig")
        gcs_target.tokens.subject_tokens.add(subject.read_text())
        config.write_text(json.dumps({
            "type": "external_account",
            "audience": POOL,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": gcs_target.token_uri,
            "credential_source": {"file": str(subject)},
        }))  # fmt: skip
        identity = f"external account {POOL}"
    conn = gcs_target.connection(prefix)
    conn["extra"] = {k: v for k, v in conn["extra"].items() if k != "keyfile_dict"}
    kafka.produce(topic, seq_events(0, 200))
    # GOOGLE_CLOUD_PROJECT: without it ADC looks the project of an external account up in Cloud Resource
    # Manager, which is not here (and which uploads do not need)
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(config), "NO_GCE_CHECK": "True", "GOOGLE_CLOUD_PROJECT": "strm-test"}
    exchanges = len(gcs_target.tokens.exchanges)
    with _environ(env), connections(strm_kafka_default=kafka.connection(), dc=conn):
        ok, message = storage_hook("dc").test_connection()
        assert ok and message.endswith(f", as {identity}"), message
        path = write_exporter(stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True)
        assert run_exporter(path).state == "success"
    assert sorted(e["seq"] for e in events_in(gcs_target.objects(prefix))) == list(range(200))
    if source == "external-account":
        exchanged = gcs_target.tokens.exchanges[exchanges:]
        assert exchanged and all(e["audience"] == POOL and e["subject_token"] == subject.read_text() for e in exchanged)


def test_gcs_impersonation_chain_writes_as_its_last_service_account(kafka: Any, gcs_target: Any) -> None:
    """The key (or ADC) only impersonates: the chain's last account writes, the others delegate."""
    topic, prefix = kafka.create_topic(unique("chain"), 1), unique("chain")
    chain = ["relay@strm-test-project.iam.gserviceaccount.com", "writer@strm-test-project.iam.gserviceaccount.com"]
    conn = gcs_target.connection(prefix)
    conn["extra"] |= {
        "impersonation_chain": ",".join(chain),
        "iam_endpoint_url": gcs_target.token_uri.rsplit("/", 1)[0],
    }
    kafka.produce(topic, seq_events(0, 50))
    before = len(gcs_target.tokens.impersonations)
    with connections(strm_kafka_default=kafka.connection(), dc=conn):
        ok, message = storage_hook("dc").test_connection()
        assert ok and message.endswith(f", as {chain[-1]}"), message
        path = write_exporter(stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True)
        assert run_exporter(path).state == "success"
    assert sorted(e["seq"] for e in events_in(gcs_target.objects(prefix))) == list(range(50))
    asked = gcs_target.tokens.impersonations[before:]
    assert asked and all(
        a == {"target": chain[-1], "delegates": [f"projects/-/serviceAccounts/{chain[0]}"]} for a in asked
    )


def test_azure_without_a_secret_writes_with_a_workload_identity(kafka: Any, azure_target: Any, tmp_path: Any) -> None:
    """No client secret: the pod's federated token (AKS workload identity) is exchanged at the Entra token
    endpoint for the application's token; the Test button names the application; the export writes."""
    topic, prefix = kafka.create_topic(unique("wi"), 2), unique("wi")
    token = tmp_path / "azure-identity-token"  # what the AKS webhook projects, refreshed on disk
    token.write_text(f"eyJ.aks-{topic}.sig")
    azure_target.entra.federated_tokens.add(token.read_text())
    conn = azure_target.connection(prefix)
    conn = {k: v for k, v in conn.items() if k not in ("login", "password")}
    # what the AKS webhook sets beside the token file; the connection names tenant and authority itself
    env = {"AZURE_FEDERATED_TOKEN_FILE": str(token), "AZURE_CLIENT_ID": azure_target.client_id}
    kafka.produce(topic, seq_events(0, 120))
    before = len(azure_target.entra.assertions)
    with _environ(env), connections(strm_kafka_default=kafka.connection(), dc=conn):
        ok, message = storage_hook("dc").test_connection()
        assert ok and f", as application {azure_target.client_id} (object " in message, message
        path = write_exporter(stream=topic, data_connector="dc", path_prefix=prefix, include_existing_events=True)
        assert run_exporter(path).state == "success"
    assert sorted(e["seq"] for e in events_in(azure_target.objects(prefix))) == list(range(120))
    assert azure_target.entra.assertions[before:] and set(azure_target.entra.assertions[before:]) == {token.read_text()}


def test_azure_without_a_secret_or_an_identity_says_so_in_one_line(azure_target: Any) -> None:
    conn = {k: v for k, v in azure_target.connection("nobody").items() if k not in ("login", "password")}
    with (
        _environ({"IMDS_ENDPOINT": "http://127.0.0.1:9", "IDENTITY_ENDPOINT": "http://127.0.0.1:9"}),
        connections(dc=conn),
    ):
        ok, message = storage_hook("dc").test_connection()
    assert not ok and "\n" not in message
    assert message.startswith("data connector 'dc' (strm_azure_blob) could not write ")
    assert "no Azure identity: the connection holds no client secret, and neither the environment" in message
