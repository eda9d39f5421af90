"""What an S3 refusal means, in one line a user can act on (never a secret)."""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
)

CAUSES = {
    "AccessDenied": "access denied (does the policy allow s3:PutObject on this prefix and this file ending: *.jsonl, "
    "or *.jsonl.gz / *.jsonl.zst when compressed, *.parquet for Parquet?)",
    "InvalidAccessKeyId": "the access key id is not known to the storage (wrong or revoked key)",
    "SignatureDoesNotMatch": "the secret access key is wrong",
    "NoSuchBucket": "the bucket does not exist",
    "AllAccessDisabled": "all access to this bucket is disabled",
    "ExpiredToken": "the credentials have expired",
}


def explain(err: BaseException, kms_key_id: str | None) -> str:
    """The cause of a boto3 error; ``kms_key_id`` is the connection's KMS key, named when KMS refused."""
    if isinstance(err, ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        message = err.response.get("Error", {}).get("Message", "request refused")
        if "kms" in f"{code} {message}".lower():
            key = kms_key_id or "the account's aws/s3 key"
            return f"{code}: KMS refused ({message}); the policy must allow kms:GenerateDataKey on {key}"
        return f"{code}: {CAUSES.get(code, message)}"
    if isinstance(err, EndpointConnectionError):
        return f"the storage endpoint is unreachable ({err.kwargs.get('endpoint_url', '')})"
    if isinstance(err, NoCredentialsError | CredentialRetrievalError):
        return (
            f"no AWS credentials: the connection holds no key, and the default credential chain (environment, "
            f"web identity token file, container or instance role) found none ({type(err).__name__}: {err})"
        )
    cause = err.__cause__ or err.__context__
    if isinstance(cause, ClientError | EndpointConnectionError):
        return explain(cause, kms_key_id)
    return f"{type(err).__name__}: {err}"


def location_cause(err: BaseException, bucket: str, kms_key_id: str | None) -> str:
    """Why GetBucketLocation was refused: under the minimal policy a wrong bucket name is refused the same way."""
    if isinstance(err, ClientError) and err.response.get("Error", {}).get("Code") == "AccessDenied":
        return (
            f"AccessDenied: the key may not call s3:GetBucketLocation on arn:aws:s3:::{bucket}. Under the "
            "minimal policy a misspelled or missing bucket is refused the same way: check the bucket name and "
            "the policy (or set the connection's region, which skips this call)"
        )
    return explain(err, kms_key_id)
