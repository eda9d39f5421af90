"""Batch exporter configuration: one YAML file per exporter, validated by pydantic.

Errors name the file and the field, so a user sees which exporter is broken and why; one broken
file never stops the others from loading.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from strm_provider.connection_settings import BUCKET_RE
from strm_provider.connection_types import KAFKA_DEFAULT
from strm_provider.naming import check_template, ending

#: an exporter's consumer group is ``strm-exporter-<name>``, its DAG ``strm_export_<name>``
GROUP_ID_PREFIX = "strm-exporter-"
DAG_ID_PREFIX = "strm_export_"
#: what each line of a file holds: the event as produced, or the record's envelope around it
Format = Literal["value", "envelope"]
#: how a record's value is encoded: JSON as produced, or framed by a Schema Registry (Confluent's wire format)
ValueFormat = Literal["json", "avro", "protobuf", "json_schema"]
#: what kind of file an exporter writes
FileFormat = Literal["jsonl", "parquet"]
#: per file format, the compressions it takes, its default first
COMPRESSIONS = {"jsonl": ("none", "gzip", "zstd"), "parquet": ("zstd", "snappy", "gzip", "none")}
#: the exporter file's fields that the operators name as Airflow's operators do; the others keep their names
OPERATOR_ARGUMENTS = {"data_connector": "storage_conn_id", "kafka_connection": "kafka_conn_id"}
#: the fields that name what an exporter reads: exactly one of them
SOURCES = ("stream", "streams", "stream_pattern")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
INTERVAL_RE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ValueError):
    """A config file is invalid; ``str()`` names the file and the field."""


def parse_interval(value: str | int) -> int:
    """Seconds in ``30s``/``5m``/``1h``/``1d`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or 1h")
    if isinstance(value, int):
        seconds = value
    else:
        match = INTERVAL_RE.match(str(value))
        if not match:
            raise ValueError(f"expected a duration like 30s, 5m or 1h, got {value!r}")
        seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if seconds < 1:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return seconds


def format_interval(seconds: int) -> str:
    """The canonical spelling of an interval: ``60s`` (as ``strm`` prints it)."""
    return f"{seconds}s"


def check_prefix(value: str) -> str:
    """A path prefix may not escape the bucket prefix (no leading/trailing ``/``, no ``..``, no ``//``), and
    holds no placeholder but ``{date}`` and ``{hour}`` (:func:`~strm_provider.naming.check_template`)."""
    if value.startswith("/") or value.endswith("/"):
        raise ValueError(f"must not start or end with '/', got {value!r}")
    parts = value.split("/") if value else []
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"must not contain '..', '.' or empty segments ('//'), got {value!r}")
    if any(ch in value for ch in "\\\n\r\t*?"):
        raise ValueError(f"must not contain backslashes, wildcards or control characters, got {value!r}")
    return check_template(value)


class ExporterConfig(BaseModel):
    """One batch exporter, as written in its YAML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    #: the stream to export; or ``streams``, a list of them; or ``stream_pattern``, a regular expression that
    #: topics must match whole (matched again at each run)
    stream: str | None = None
    streams: list[str] | None = None
    stream_pattern: str | None = None
    data_connector: str
    #: the bucket or container, for a data connector of the official providers' types (aws,
    #: google_cloud_platform, wasb), which hold only credentials; ours name their bucket themselves
    bucket: str | None = None
    path_prefix: str = ""
    interval: int = Field(default=60, description="seconds between runs")
    kafka_connection: str = KAFKA_DEFAULT  # the strm_kafka hook's default
    partition_sets: int = Field(default=1, ge=1, le=1000)
    include_existing_events: bool = False
    on_invalid_event: Literal["dead_letter", "fail"] = "dead_letter"
    max_file_bytes: int = Field(default=128 * 1024 * 1024, ge=1024)
    max_file_events: int | None = Field(default=None, ge=1)
    compression: Literal["none", "gzip", "zstd", "snappy"] = "none"
    format: Format = "value"
    value_format: ValueFormat = "json"
    file_format: FileFormat = "jsonl"
    #: the columns of a Parquet exporter of JSON events: an Avro record schema, a JSON Schema object, or
    #: ``{subject, version}`` of the registry (framed records bring theirs from the registry)
    value_schema: dict[str, Any] | None = None
    name_style: Literal["standard", "compact"] = "standard"
    retries: int = Field(default=2, ge=0, le=100)
    retry_delay: int = Field(default=30, description="seconds before a failed task is retried")
    #: URI of the Airflow Asset the exporter's DAG updates (``s3://bucket/prefix``, as ``strm create
    #: batch-exporter`` writes it); when empty, the DAG names one without looking the connection up
    #: (:func:`strm_provider.dag_factory.asset_uri`)
    asset_uri: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _parquet_compression(cls, data: Any) -> Any:
        """Parquet files are zstd-compressed unless the file says otherwise, as JSON Lines are not."""
        if isinstance(data, dict) and data.get("file_format") == "parquet" and data.get("compression") is None:
            return {**data, "compression": COMPRESSIONS["parquet"][0]}
        return data

    @field_validator("interval", "retry_delay", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> int:
        return parse_interval(value)

    @field_validator("stream")
    @classmethod
    def _stream(cls, value: str | None) -> str | None:
        if value is not None and not TOPIC_RE.match(value):
            raise ValueError("expected a Kafka topic name (letters, digits, '.', '_', '-')")
        return value

    @field_validator("streams")
    @classmethod
    def _streams(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("expected at least one Kafka topic name")
        bad = [name for name in value if not TOPIC_RE.match(name)]
        if bad:
            raise ValueError(f"expected Kafka topic names (letters, digits, '.', '_', '-'), got {bad[0]!r}")
        if len(set(value)) != len(value):
            raise ValueError("lists a stream twice")
        return value

    @field_validator("stream_pattern")
    @classmethod
    def _stream_pattern(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"expected a regular expression: {err}") from None
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _a_source(cls, data: Any, handler: ModelWrapValidatorHandler[ExporterConfig]) -> ExporterConfig:
        """A file that names no stream is refused for its missing ``stream``, beside whatever else it gets wrong
        (a check after the fields' own would be skipped when one of them fails)."""
        if not isinstance(data, dict) or any(data.get(f) is not None for f in SOURCES):
            return handler(data)
        missing = InitErrorDetails(type="missing", loc=("stream",), input=data)
        try:
            handler(data)
        except ValidationError as err:
            others = [
                InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"], ctx=e.get("ctx", {}))
                for e in err.errors()
                if e["loc"] != ()  # the check after the fields, below, names the same missing stream
            ]
            raise ValidationError.from_exception_data(cls.__name__, [missing, *others]) from None
        raise ValidationError.from_exception_data(cls.__name__, [missing])

    @model_validator(mode="after")
    def _one_source(self) -> ExporterConfig:
        given = [f for f in SOURCES if getattr(self, f) is not None]
        if not given:
            raise ValueError("stream: required field is missing (or give streams, or stream_pattern)")
        if len(given) > 1:
            raise ValueError(f"{given[1]}: give one of stream, streams and stream_pattern, not {' and '.join(given)}")
        if self.stream is None and not self.name:
            raise ValueError(f"name: an exporter of {given[0]} needs a name (it names its DAG and Kafka group)")
        return self

    @field_validator("data_connector", "kafka_connection")
    @classmethod
    def _conn_id(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError("expected an Airflow connection id (letters, digits, '.', '_', '-')")
        return value

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is not None and not BUCKET_RE.match(value):
            raise ValueError("expected a bucket or container name (lowercase letters, digits, '.', '_', '-'; 3-222)")
        return value

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_prefix(value)

    @field_validator("asset_uri")
    @classmethod
    def _asset_uri(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z][a-z0-9+.-]*://[^/\s]+", value):
            raise ValueError("expected a URI like s3://bucket/prefix")
        return value

    @field_validator("value_schema")
    @classmethod
    def _value_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None or value.get("type") in ("record", "object"):
            return value
        if set(value) == {"subject", "version"} and isinstance(value["version"], int) and value["subject"]:
            return value
        raise ValueError(
            "expected an Avro record schema (type: record), a JSON Schema (type: object), or a registry subject's "
            "version ({subject: orders-value, version: 3})"
        )

    @model_validator(mode="after")
    def _file_format(self) -> ExporterConfig:
        allowed = COMPRESSIONS[self.file_format]
        if self.compression not in allowed:
            raise ValueError(
                f"compression: {self.file_format} files take {', '.join(allowed)}, got {self.compression!r}"
            )
        if self.file_format == "parquet" and self.value_format == "json" and self.value_schema is None:
            raise ValueError("value_schema: a Parquet exporter of JSON events needs the schema of its columns")
        if self.value_schema is not None and (self.file_format, self.value_format) != ("parquet", "json"):
            raise ValueError("value_schema: only a Parquet exporter of JSON events takes one")
        return self

    @model_validator(mode="after")
    def _default_name(self) -> ExporterConfig:
        if not self.name:
            object.__setattr__(self, "name", f"{self.data_connector}-{self.stream}")
        if not NAME_RE.match(self.name):
            raise ValueError(f"name: expected letters, digits, '.', '_', '-' (got {self.name!r})")
        return self

    @property
    def several_streams(self) -> bool:
        """Whether the exporter reads a list of streams or the streams a pattern matches."""
        return self.stream is None

    @property
    def source(self) -> str | list[str] | None:
        """What the operators take as ``stream``: the stream, the list of streams, or none beside a pattern."""
        return self.stream if self.stream is not None else self.streams

    def describe_streams(self) -> str:
        """The exporter's streams in words: ``clicks``, ``clicks, views``, or ``/orders\\..*/``."""
        if self.stream_pattern is not None:
            return f"/{self.stream_pattern}/"
        return self.stream or ", ".join(self.streams or [])

    @property
    def dag_id(self) -> str:
        return f"{DAG_ID_PREFIX}{self.name}"

    @property
    def ending(self) -> str:
        """Which file name ending the exporter's files have (:data:`strm_provider.naming.EXTENSIONS`)."""
        return ending(self.file_format, self.compression)

    @property
    def group_id(self) -> str:
        """The Kafka consumer group that holds this exporter's committed offsets."""
        return f"{GROUP_ID_PREFIX}{self.name}"

    def to_yaml_dict(self) -> dict[str, Any]:
        """What the CLI writes: only the fields that differ from the defaults, plus the required ones."""
        data = self.model_dump(exclude_defaults=True)
        data["name"] = self.name
        data["interval"] = format_interval(self.interval)
        if self.file_format == "parquet":
            # a Parquet file's compression defaults to zstd when the file does not name one, not to the field's none
            data["compression"] = self.compression
        if "retry_delay" in data:
            data["retry_delay"] = format_interval(self.retry_delay)
        return data


def default(field: str) -> Any:
    """The default of an exporter file's ``field``: the operators' arguments take theirs from here."""
    return ExporterConfig.model_fields[field].get_default(call_default_factory=True)


def operator_arguments(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Exporter file ``fields`` under the names of the operators' arguments (:data:`OPERATOR_ARGUMENTS`)."""
    return {OPERATOR_ARGUMENTS.get(name, name): value for name, value in fields.items()}


def field_problems(err: ValidationError) -> dict[str, str]:
    """One message per field of an exporter that does not validate, in the model's order: an unknown field
    with the known one it most resembles (a missing field that a misspelling explains is not reported)."""
    items = err.errors()
    suggested = {_field(item): _suggestion(_field(item)) for item in items if item["type"] == "extra_forbidden"}
    problems: dict[str, str] = {}
    for item in items:
        field = _field(item)
        if item["type"] == "extra_forbidden":
            hint = suggested[field]
            message = "unknown field" + (f", did you mean '{hint}'?" if hint else "")
        elif item["type"] == "missing":
            if field in suggested.values():
                continue
            message = "required field is missing"
        else:
            message = item["msg"].removeprefix("Value error, ")
            # a check across fields names the field it refuses first: "<field>: <why>"
            named, _, why = message.partition(": ")
            if field == "(file)" and why and named in ExporterConfig.model_fields:
                field, message = named, why
        problems.setdefault(field, message)
    return problems


def _describe(err: ValidationError) -> str:
    """Every problem of a file in one line, then the allowed fields, once, if one was unknown."""
    problems = field_problems(err)
    parts = [f"field '{field}': {message}" for field, message in problems.items()]
    if any(item["type"] == "extra_forbidden" for item in err.errors()):
        parts.append(f"allowed fields: {', '.join(sorted(ExporterConfig.model_fields))}")
    return "; ".join(parts)


def _field(item: Any) -> str:
    return ".".join(str(p) for p in item["loc"]) or "(file)"


def _suggestion(field: str) -> str | None:
    """The allowed field an unknown one is most likely a misspelling of."""
    close = difflib.get_close_matches(field, list(ExporterConfig.model_fields), n=1, cutoff=0.6)
    return close[0] if close else None


def load_exporter(path: Path) -> ExporterConfig:
    """Read and validate one exporter file (safe YAML only)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not readable YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return ExporterConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: {_describe(err)}") from None


@dataclass(frozen=True)
class BrokenExporter:
    """An exporter file that cannot run: its message names the file, the field and what was expected."""

    path: Path
    error: str
    #: the file's own interval when that field is readable, so its failing DAG keeps the exporter's pace
    interval: int


class LoadedExporter(NamedTuple):
    """A valid exporter file and what it holds."""

    path: Path
    config: ExporterConfig


@dataclass(frozen=True)
class LoadResult:
    configs: dict[str, LoadedExporter]
    broken: list[BrokenExporter]

    @property
    def errors(self) -> list[str]:
        return [b.error for b in self.broken]


def exporters_dir(beside: Path | None = None) -> Path:
    """``$STRM_EXPORTERS_DIR``; else ``exporters/`` beside the DAG file (``beside``), else in the DAGs folder.

    The DAG file and the CLI both resolve the folder here, so what the CLI writes is what the
    scheduler reads.
    """
    if os.environ.get("STRM_EXPORTERS_DIR"):
        return Path(os.environ["STRM_EXPORTERS_DIR"])
    if beside is not None:
        return beside / "exporters"
    from airflow.configuration import conf

    return Path(conf.get("core", "dags_folder")) / "exporters"


def exporter_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))


def _readable_interval(path: Path) -> int:
    default: int = ExporterConfig.model_fields["interval"].default
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return parse_interval(data["interval"]) if isinstance(data, dict) and "interval" in data else default
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError):
        return default


def load_exporters(folder: Path | None = None) -> LoadResult:
    """Every valid exporter in ``folder`` by name, and every broken file with its reason.

    When two files claim one name, the file named ``<name>.yaml`` (as ``strm create batch-exporter``
    writes it) keeps it, else the first in file-name order: a stray copy added later never takes
    over a running exporter.
    """
    folder = folder or exporters_dir()
    configs: dict[str, LoadedExporter] = {}
    broken: list[BrokenExporter] = []
    if not folder.is_dir():
        return LoadResult(configs, broken)
    claims: dict[str, list[LoadedExporter]] = {}
    for path in exporter_files(folder):
        try:
            cfg = load_exporter(path)
        except ConfigError as err:
            broken.append(BrokenExporter(path, str(err), _readable_interval(path)))
            continue
        claims.setdefault(cfg.name, []).append(LoadedExporter(path, cfg))
    for name, claimants in claims.items():
        owner = next((c for c in claimants if c.path.stem == name), claimants[0])
        configs[name] = owner
        broken.extend(
            BrokenExporter(
                path,
                f"{path}: field 'name': duplicate exporter name {name!r} (also in {owner.path})",
                cfg.interval,
            )
            for path, cfg in claimants
            if path != owner.path
        )
    broken.sort(key=lambda b: b.path)
    return LoadResult(configs, broken)


def exporter_path(cfg: ExporterConfig) -> Path:
    """Where ``strm`` writes exporter ``cfg``: ``<name>.yaml`` in :func:`exporters_dir`."""
    return exporters_dir() / f"{cfg.name}.yaml"


def write_exporter(cfg: ExporterConfig) -> Path:
    """Write ``cfg`` as ``<name>.yaml`` in :func:`exporters_dir`, atomically: a hidden temp file, then ``os.replace``.

    The DAG processor ignores dot files, so it never parses a half-written exporter.
    """
    target = exporter_path(cfg)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{cfg.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yaml.safe_dump(cfg.to_yaml_dict(), out, sort_keys=False)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target
