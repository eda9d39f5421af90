"""Operators: plan a run, and export one partition set from Kafka to a data connector."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException, BaseOperator, Context
from pydantic import ValidationError

from strm_provider import progress
from strm_provider.config import GROUP_ID_PREFIX, ExporterConfig, default, field_problems
from strm_provider.export import ExportResult, export_ranges
from strm_provider.hooks import storage_hook
from strm_provider.hooks.kafka import StrmKafkaHook
from strm_provider.hooks.storage import StorageHook
from strm_provider.naming import EXTENSIONS, ending, fixed_part, with_stream
from strm_provider.offsets import plan_stream, plan_streams, run_metadata, streams_lag
from strm_provider.planning import (
    CUT_SETTINGS,
    Decision,
    PartitionSet,
    PlanRefused,
    PlanRequest,
    Progress,
    StreamsProgress,
    bundle_sets,
    select_streams,
)
from strm_provider.readers import RecordReader
from strm_provider.schema_registry import RegistryClient
from strm_provider.version_compat import xcom_returns
from strm_provider.writer import codec_build

#: the arguments checked as the exporter file's fields are
_CHECKED = ("path_prefix", "compression", "format", "value_format", "file_format", "value_schema", "name_style")


def _previous_run_failed(context: Context) -> bool:
    """Whether this exporter is restarting after a failed run (so it re-validates its connector)."""
    try:
        previous = context["ti"].get_previous_dagrun()
    except Exception:
        return True
    return previous is not None and str(getattr(previous, "state", "")) in ("failed", "DagRunState.FAILED")


class KafkaExportBaseOperator(BaseOperator):
    """What the plan and the export operators share: the stream, where its files go, the exporter's
    consumer group, and the settings that decide where files are cut and how they are named.

    :param stream: the Kafka topic to export, or a list of topics. (templated)
    :param stream_pattern: instead of ``stream``, a regular expression: every topic it matches whole is
        exported, matched again at each plan. (templated)
    :param storage_conn_id: connection id of the data connector the files go to: ``strm_s3``,
        ``strm_s3_compatible``, ``strm_gcs`` or ``strm_azure_blob``, or one of the official providers'
        ``aws``, ``google_cloud_platform`` or ``wasb`` with ``bucket``. (templated)
    :param group_id: the exporter's Kafka consumer group: its committed offsets are the exporter's
        progress. (templated)
    :param bucket: the bucket or container, for an ``aws``, ``google_cloud_platform`` or ``wasb``
        connection (which holds only credentials); ours name their own, so leave it unset. (templated)
    :param path_prefix: folder of the files in the bucket or container, without leading or trailing
        ``/`` (default: none). ``{date}`` (``YYYY-MM-DD``) and ``{hour}`` (``HH``) in it are filled from
        each event's Kafka timestamp in UTC, and a file never spans two folders; for the validation
        file, from the current time. ``{stream}`` is the topic the file's events come from. (templated)
    :param kafka_conn_id: connection id of the Kafka cluster (type ``strm_kafka``; default
        ``strm_kafka_default``). (templated)
    :param include_existing_events: on the exporter's first run, also export what the stream holds
        already (default: start at the stream's end).
    :param max_file_bytes: rotate to a new file before this many bytes, as stored (compressed bytes
        when compressed; default 128 MiB).
    :param max_file_events: rotate to a new file at this many events (default: no limit).
    :param compression: ``none`` (default, ``.jsonl``), ``gzip`` (``.jsonl.gz``) or ``zstd``
        (``.jsonl.zst``), compressed while streaming.
    :param format: ``value`` (default: each line is the event as produced) or ``envelope`` (each line
        holds the record's partition, offset, timestamp, key, headers and the event as ``value``).
    :param value_format: ``json`` (default: values are JSON objects, kept as produced), or ``avro``,
        ``protobuf``, ``json_schema``: values framed by a Schema Registry (the Kafka connection's
        ``schema_registry_url``), decoded with the schema each names.
    :param file_format: ``jsonl`` (default) or ``parquet`` (``.parquet`` files; ``compression`` then
        ``zstd``, ``snappy``, ``gzip`` or ``none``).
    :param value_schema: for a Parquet exporter of JSON events, the columns: an Avro record schema or a
        JSON Schema (a dict).
    :param name_style: ``standard`` (default: ``2026-12-05T22:59:07-…``) or ``compact``
        (``20261205T225907Z-…``, no colons, for Spark, Hive and other Hadoop-based readers).
    :param exporter: the exporter's name: in messages that name a ``strm`` command (default: the group
        id without ``strm-exporter-``), and in metrics, ``strm.exporter.<exporter>.<metric>`` (default:
        the DAG id).
    """

    template_fields: Sequence[str] = (
        "stream",
        "stream_pattern",
        "storage_conn_id",
        "bucket",
        "path_prefix",
        "group_id",
        "kafka_conn_id",
    )

    def __init__(
        self,
        *,
        stream: str | list[str] | None = None,
        stream_pattern: str | None = None,
        storage_conn_id: str,
        group_id: str,
        bucket: str | None = default("bucket"),
        path_prefix: str = default("path_prefix"),
        kafka_conn_id: str = default("kafka_connection"),
        include_existing_events: bool = default("include_existing_events"),
        max_file_bytes: int = default("max_file_bytes"),
        max_file_events: int | None = default("max_file_events"),
        compression: str = default("compression"),
        format: str = default("format"),
        value_format: str = default("value_format"),
        file_format: str = default("file_format"),
        value_schema: dict[str, Any] | None = None,
        name_style: str = default("name_style"),
        exporter: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stream = stream
        self.stream_pattern = stream_pattern
        self.storage_conn_id = storage_conn_id
        self.group_id = group_id
        self.bucket = bucket
        self.path_prefix = path_prefix
        self.kafka_conn_id = kafka_conn_id
        self.include_existing_events = include_existing_events
        self.max_file_bytes = max_file_bytes
        self.max_file_events = max_file_events
        self.compression = compression
        self.format = format
        self.value_format = value_format
        self.file_format = file_format
        self.value_schema = value_schema
        self.name_style = name_style
        self.exporter = exporter

    def cut_settings(self) -> dict[str, Any]:
        """What a plan records of these arguments (:data:`~strm_provider.planning.CUT_SETTINGS`), with the
        build of the compressor that cuts the files."""
        return {key: getattr(self, name) for key, name in CUT_SETTINGS.items()} | {
            "codec": codec_build(self.compression)
        }

    @property
    def several_streams(self) -> bool:
        """Whether this exporter reads a list of streams or the streams a pattern matches."""
        return isinstance(self.stream, list) or self.stream_pattern is not None

    def _check_settings(self) -> None:
        """Refuse what the exporter file would refuse: the streams, the path prefix, compression, formats, schema."""
        fields = {name: getattr(self, name) for name in _CHECKED}
        if isinstance(self.stream, list):
            fields["streams"] = self.stream
        elif self.stream is not None:
            fields["stream"] = self.stream
        if self.stream_pattern is not None:
            fields["stream_pattern"] = self.stream_pattern
        try:
            ExporterConfig.model_validate({"name": "n", "data_connector": "d", **fields})
        except ValidationError as err:
            field, message = next(iter(field_problems(err).items()))
            raise ValueError(f"{field}: {message}") from None

    @property
    def ending(self) -> str:
        """Which file name ending the files have (:data:`strm_provider.naming.EXTENSIONS`)."""
        return ending(self.file_format, self.compression)

    def _registry(self, kafka: StrmKafkaHook) -> RegistryClient | None:
        """The Schema Registry, for framed records or columns named by a registry subject."""
        if self.value_format == "json" and "subject" not in (self.value_schema or {}):
            return None
        return kafka.schema_registry()

    def _reporters(self) -> list[str]:
        """The tasks whose summaries (XCom) tell which sets of a plan were committed."""
        return [self.task_id]

    def _plan(self, consumer: Any, context: Context, partition_sets: int) -> Decision:
        """Decide this run from Kafka and the exporter's record in Airflow, keep the record, commit the starts.

        A refusal (the exporter's position cannot be told without guessing) fails the task at once, without
        retries: trying again cannot settle it, ``strm reset`` does.
        """
        kept = progress.load(self.group_id)
        # an exporter that read several streams keeps its record of the one it reads now
        record = kept.streams.get(str(self.stream)) if isinstance(kept, StreamsProgress) else kept
        before = progress.dumps(kept) if kept else None

        def save(new: Progress) -> None:
            if progress.dumps(new) != before:
                progress.save(self.group_id, new)

        request = PlanRequest(
            str(self.stream),
            self.include_existing_events,
            run_id=str(context.get("run_id") or ""),
            partition_sets=partition_sets,
            settings=self.cut_settings(),
            codecs={name: codec_build(name) for name in EXTENSIONS},
            finished=self._finished(record, context),
            exporter=self.exporter or self.group_id.removeprefix(GROUP_ID_PREFIX),
        )
        try:
            decision = plan_stream(consumer, request, record=record, save=save)
        except PlanRefused as err:
            raise AirflowFailException(str(err)) from None
        if decision.recovered:
            self.log.warning(
                "Kafka had forgotten the group's committed offsets of partitions %s: recovered them from Airflow's "
                "record (Variable %s)",
                decision.recovered,
                progress.variable_key(self.group_id),
            )
        if decision.replaying:
            self.log.warning(
                "run %s did not finish: replaying its plan whole (sets %s, %s events, its settings); events that "
                "arrived since wait for the next run",
                decision.replaying,
                [s.index for s in decision.sets],
                sum(s.size for s in decision.sets),
            )
        return decision

    def _plan_many(
        self, consumer: Any, context: Context, partition_sets: int
    ) -> tuple[list[PartitionSet], bool, StreamsProgress | None]:
        """:meth:`_plan` for several streams: the sets to export, each naming its stream; whether the
        exporter (or a stream Kafka had forgotten) starts here, which the validation file is for; the record."""
        kept = progress.load(self.group_id)
        now_ms = int(time.time() * 1000)
        # an exporter that read one stream keeps its record of it
        record = StreamsProgress(now_ms, {kept.stream: kept}, kept.validated) if isinstance(kept, Progress) else kept
        before = progress.dumps(kept) if kept else None

        def save(new: StreamsProgress) -> None:
            if progress.dumps(new) != before:
                progress.save(self.group_id, new)

        names = self.stream if isinstance(self.stream, list) else None
        streams = select_streams(consumer.topics(), names, self.stream_pattern)
        if not streams:
            self.log.warning("no topic matches stream_pattern %r: nothing to export", self.stream_pattern)
            return [], False, record
        runs = {run for r in (record.streams.values() if record else ()) if r.plan for run in r.plan.runs}
        summaries = self._summaries(sorted(runs), context)
        settings, codecs = self.cut_settings(), {name: codec_build(name) for name in EXTENSIONS}
        exporter = self.exporter or self.group_id.removeprefix(GROUP_ID_PREFIX)
        requests = []  # each refusal names the reset of its own stream
        for stream in streams:
            known = record.streams.get(stream) if record else None
            finished = known.plan.finished(summaries, stream) if known and known.plan else set()
            requests.append(
                PlanRequest(
                    stream,
                    self.include_existing_events,
                    run_id=str(context.get("run_id") or ""),
                    partition_sets=partition_sets,
                    settings=settings,
                    codecs=codecs,
                    finished=finished,
                    exporter=f"{exporter} --stream {stream}",
                )
            )
        try:
            decisions, record = plan_streams(consumer, requests, record, save, now_ms=now_ms)
        except PlanRefused as err:
            raise AirflowFailException(str(err)) from None
        sets = []
        for stream, decision in decisions.items():
            sets += [replace(s, stream=stream) for s in decision.sets]
            if decision.recovered:
                self.log.warning(
                    "stream %s: Kafka had forgotten the group's committed offsets of partitions %s: recovered them "
                    "from Airflow's record (Variable %s)",
                    stream,
                    decision.recovered,
                    progress.variable_key(self.group_id),
                )
            if decision.replaying:
                self.log.warning(
                    "stream %s: run %s did not finish: replaying its plan whole (sets %s, %s events)",
                    stream,
                    decision.replaying,
                    [s.index for s in decision.sets],
                    sum(s.size for s in decision.sets),
                )
        starting = kept is None or any(d.recovered for d in decisions.values())
        return sets, starting, record

    def _summaries(self, runs: list[str], context: Context) -> list[Any]:
        """The export tasks' summaries (XCom) of ``runs``, the runs that exported a plan still in flight."""
        summaries = []
        for run_id in runs:
            summaries += [s for s in xcom_returns(context["ti"], self._reporters(), run_id) if s is not None]
        return summaries

    def _finished(self, record: Progress | None, context: Context) -> set[int]:
        """The sets of the plan in flight whose export tasks reported their commit (XCom), for sets whose
        offsets Kafka has forgotten."""
        if record is None or record.plan is None:
            return set()
        return record.plan.finished(self._summaries(record.plan.runs, context))

    def _plan_run(
        self, consumer: Any, context: Context, storage: StorageHook, partition_sets: int
    ) -> list[PartitionSet]:
        """Plan this run (every stream of it), prove the data connector when the exporter (re)starts, and say
        what was planned: the sets to export, each naming its stream in a run over several streams."""
        if self.several_streams:
            sets, starting, many = self._plan_many(consumer, context, partition_sets)
            if many is not None:
                first = min((s.stream for s in sets), default=min(many.streams, default=""))
                self._validate(context, starting, many, storage, first)
            per_stream: dict[str, int] = {}
            for pset in sets:
                per_stream[pset.stream] = per_stream.get(pset.stream, 0) + pset.size
            for stream, size in sorted(per_stream.items()):
                self.log.info("stream %s: %s events planned", stream, size)
            total = sum(s.size for s in sets)
            self.log.info("%s events of %s stream(s) planned in %s partition set(s)", total, len(per_stream), len(sets))
            return sets
        decision = self._plan(consumer, context, partition_sets)
        starting = decision.plan.new_exporter or bool(decision.recovered)
        self._validate(context, starting, decision.record, storage, str(self.stream))
        for rng in decision.plan.ranges:
            self.log.info(
                "partition %s: plan offsets %s..%s (%s events)%s",
                rng.partition,
                rng.start,
                rng.end,
                rng.size,
                f", {rng.lost_to_retention} offsets lost to retention" if rng.lost_to_retention else "",
            )
        self.log.info("%s events planned in %s partition set(s)", decision.plan.events_planned, len(decision.sets))
        return decision.sets

    def _validate(
        self, context: Context, starting: bool, record: Progress | StreamsProgress, storage: StorageHook, stream: str
    ) -> None:
        """Write the validation file, as the export tasks will write their files, when the exporter (re)starts.

        After the plan, so that a new exporter's start is pinned at its first run even when its credentials
        are wrong (it is "created" then), and before anything is read. On a new exporter; after a pause
        longer than Kafka keeps offsets (``starting``); and once after a failed run or try (the first try may
        have pinned the start and then failed on the credentials), until a run succeeds again: each validation
        leaves a file that a write-only identity cannot delete, so failing runs must not pile them up. Its
        folder is the one ``stream``'s files of this hour go to.
        """
        restarting = getattr(context.get("ti"), "try_number", 1) > 1 or _previous_run_failed(context)
        if starting or (restarting and not record.validated):
            key = storage.write_test_file(with_stream(self.path_prefix, stream), self.ending)
            self.log.info("exporter (re)started: validated data connector '%s' with %s", self.storage_conn_id, key)
            if restarting:
                progress.save(self.group_id, replace(record, validated=str(context.get("run_id") or "?")))
        elif not restarting and record.validated:
            progress.save(self.group_id, replace(record, validated=None))


class KafkaExportPlanOperator(KafkaExportBaseOperator):
    """Fix this run's offset ranges and split them into partition sets (one mapped export each).

    The plan is recorded in an Airflow Variable (``strm.progress.<group_id>``) before anything is
    uploaded, with the settings that decide where files are cut (``path_prefix``, ``max_file_bytes``,
    ``max_file_events``, ``compression``, ``format``): the export tasks take them from the plan, and a
    run that did not finish is replayed whole by the next one, offsets that Kafka forgot taken from
    there. On an exporter's first run, and once after a failed run until a run succeeds, it also writes
    the validation file ``.strm_test_<uuid>.jsonl`` (``.jsonl.gz``, ``.jsonl.zst`` when compressed),
    holding no event, in the folder this hour's files go to, to prove the data connector's credentials
    before anything is read.

    :param partition_sets: how many sets (files and mapped export tasks) to split the partitions into.

    The other parameters are :class:`KafkaExportBaseOperator`'s.
    """

    ui_color = "#e8f4fd"

    def __init__(self, *, partition_sets: int = default("partition_sets"), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.partition_sets = partition_sets

    def _reporters(self) -> list[str]:
        return sorted(self.downstream_task_ids)

    def execute(self, context: Context) -> list[dict[str, Any]]:
        self._check_settings()
        # Every run: a connection of the wrong type, or a bucket missing or misplaced, fails here in one line.
        storage = storage_hook(self.storage_conn_id, self.bucket)
        kafka = StrmKafkaHook(self.kafka_conn_id)
        kafka.check_reader()  # before anything is planned: every export task would fail the same way
        registry = self._registry(kafka)
        if registry is not None:
            try:
                registry.check()
            finally:
                registry.close()
        consumer = kafka.consumer(self.group_id)
        try:
            sets = self._plan_run(consumer, context, storage, self.partition_sets)
        finally:
            consumer.close()
        if not self.several_streams:
            return [s.to_xcom() for s in sets]
        shares = bundle_sets(sets, self.partition_sets) if sets else []
        self.log.info("%s partition set(s) shared among %s export task(s)", len(sets), len(shares))
        return [{"index": i, "sets": [s.to_xcom() for s in share]} for i, share in enumerate(shares)]


class KafkaToStorageOperator(KafkaExportBaseOperator):
    """Export one partition set of a Kafka stream to a data connector as JSON Lines, exactly once.

    Reads each partition's planned range, streams the events into one file per set (rotating at
    ``max_file_bytes``/``max_file_events``), uploads, and only then commits the offsets to the
    exporter's consumer group. Without ``partition_set`` it plans the run itself, as the plan task
    would (recording the plan, writing the validation file when the exporter (re)starts), and exports
    it as one set per stream: an exporter of one partition set runs as this task alone, and it can be
    used on its own in a hand-written DAG. A run with nothing to export is then skipped, as a mapped
    export over no set is, so its Asset is not updated.

    :param partition_set: the set to export, as the plan task returns it (from XCom), with the settings
        the plan fixed (they take the place of ``path_prefix``, ``max_file_bytes``, ``max_file_events``,
        ``compression`` and ``format``, so a replayed plan cuts its files as it first did); for an exporter
        of several streams, ``{"index": i, "sets": [...]}``, the sets one task exports; ``None`` plans the
        run here (``include_existing_events`` applies only then).
    :param on_invalid_event: ``dead_letter`` (default: records that are not JSON objects go to
        ``_dead_letter/`` under the prefix's folders before any placeholder) or ``fail`` (the task
        fails and commits nothing).

    The other parameters are :class:`KafkaExportBaseOperator`'s.

    Metrics, through Airflow's (StatsD or OpenTelemetry, as the deployment configures them), after
    the commit: the counters ``events``, ``bytes``, ``files``, ``dead_letters`` and
    ``lost_to_retention`` (offsets deleted by retention before they were exported), the timer
    ``seconds``, and the gauge ``lag`` (the group's offsets behind the stream's end, all partitions),
    each tagged with ``exporter`` and ``stream`` where the backend has tags. With the OpenLineage
    provider installed (extra ``[openlineage]``) the task reports the topic as its input and the
    bucket or container and prefix as its output.
    """

    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        partition_set: dict[str, Any] | None = None,
        on_invalid_event: str = default("on_invalid_event"),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.partition_set = partition_set
        self.on_invalid_event = on_invalid_event
        #: the streams the last execution exported from, for lineage
        self._exported: list[str] = []

    def execute(self, context: Context) -> dict[str, Any]:
        started = time.monotonic()
        if self.partition_set is not None and "sets" not in self.partition_set:
            self._take_planned_settings(self.partition_set)
        self._check_settings()
        storage = storage_hook(self.storage_conn_id, self.bucket)
        kafka = StrmKafkaHook(self.kafka_conn_id)
        consumer = kafka.consumer(self.group_id)
        reader: RecordReader | None = None
        registry: RegistryClient | None = None
        results: list[tuple[str, ExportResult]] = []
        try:
            work = self._work(consumer, context, storage)
            if not work and self.partition_set is None:
                # skipped, as a mapped export over no set is: the run updates no Asset, so nothing downstream runs
                raise AirflowSkipException("nothing to export: no new events since the last run")
            if not work:
                self.log.info("nothing to export")
                return ExportResult().as_dict()
            reader = kafka.reader(self.group_id)
            for pset in work:
                # each set is cut as its plan fixed it: a replayed plan keeps the settings it was made with
                self._take_planned_settings(pset.to_xcom())
                if registry is None:
                    registry = self._registry(kafka)
                stream = pset.stream or str(self.stream)
                result = self._export(consumer, reader, storage, pset, stream, context, registry)
                results.append((stream, result))
            lags = _lags(consumer, sorted({stream for stream, _ in results}))
            for stream, result in results:
                for entry in result.partitions:
                    if stream in lags:  # committed at the planned end: what arrived since
                        entry["lag_left"] = lags[stream].get(entry["partition"], 0)
                self._emit_metrics(result, stream, time.monotonic() - started, lags.get(stream), context)
        finally:
            if reader is not None:
                reader.close()
            if registry is not None:
                registry.close()
            consumer.close()
        result = _merged(results) if self.several_streams else results[0][1]
        self._exported = sorted({stream for stream, _ in results})
        self.log.info(
            "exported %s events (%s bytes) in %s file(s), %s dead letters; offsets committed",
            result.events,
            result.bytes,
            len(result.files),
            result.dead_letters,
        )
        return result.as_dict()

    def _take_planned_settings(self, planned: dict[str, Any]) -> None:
        """Cut and name files as the plan fixed it, with the compressor build that planned it."""
        fixed = planned.get("settings") or {}
        for key, name in CUT_SETTINGS.items():
            setattr(self, name, fixed.get(key, getattr(self, name)))
        if fixed.get("codec", codec_build(self.compression)) != codec_build(self.compression):
            raise AirflowFailException(
                f"this set was planned with {fixed['codec']} cutting its files, and this worker has "
                f"{codec_build(self.compression)}: its files would be cut at other points; run it on a worker "
                "with the planning build"
            )

    def _work(self, consumer: Any, context: Context, storage: StorageHook) -> list[PartitionSet]:
        """The sets to export: the planned ones, or without a plan, this run's plan of every partition of every
        stream (one set per stream), planned here as the plan task would."""
        if self.partition_set is not None:
            planned = self.partition_set.get("sets") or [self.partition_set]
            return [PartitionSet.from_xcom(s) for s in planned]
        return self._plan_run(consumer, context, storage, 1)

    def _export(
        self,
        consumer: Any,
        reader: RecordReader,
        storage: StorageHook,
        work: PartitionSet,
        stream: str,
        context: Context,
        registry: RegistryClient | None,
    ) -> ExportResult:
        result = export_ranges(
            consumer,
            reader,
            storage,
            stream=stream,
            path_prefix=with_stream(self.path_prefix, stream),
            partitions=work.partitions,
            ranges=work.ranges,
            on_invalid_event=self.on_invalid_event,
            max_file_bytes=self.max_file_bytes,
            max_file_events=self.max_file_events,
            compression=self.compression,
            record_format=self.format,
            value_format=self.value_format,
            file_format=self.file_format,
            value_schema=self.value_schema,
            name_style=self.name_style,
            registry=registry,
            commit_metadata=run_metadata(context.get("run_id", "")),
        )
        if work.stream:
            for entry in result.partitions:
                entry["stream"] = work.stream
        return result

    def _emit_metrics(
        self, result: ExportResult, stream: str, seconds: float, lag: dict[int, int] | None, context: Context
    ) -> None:
        from airflow.providers.common.compat.sdk import Stats

        name = self.exporter or getattr(context.get("dag"), "dag_id", None) or self.dag_id
        tags = {"exporter": name, "stream": stream}
        prefix = f"strm.exporter.{name}"
        for metric, value in (
            ("events", result.events),
            ("bytes", result.bytes),
            ("files", len(result.files)),
            ("dead_letters", result.dead_letters),
            ("lost_to_retention", result.lost_to_retention),
        ):
            Stats.incr(f"{prefix}.{metric}", value, tags=tags)
        Stats.timing(f"{prefix}.seconds", timedelta(seconds=seconds), tags=tags)
        if lag is not None:
            Stats.gauge(f"{prefix}.lag", sum(lag.values()), tags=tags)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage datasets: the topic (namespace ``kafka://<first bootstrap server>``) in, the
        bucket or container out (``s3://bucket``, ``gs://bucket``, ``wasbs://container@account``, named
        by the prefix), as OpenLineage names datasets."""
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        bootstrap = StrmKafkaHook(self.kafka_conn_id).bootstrap_servers.split(",")[0].strip()
        storage = storage_hook(self.storage_conn_id, self.bucket).asset_uri("")
        streams = self._exported or ([self.stream] if isinstance(self.stream, str) else self.stream)
        return OperatorLineage(
            inputs=[Dataset(namespace=f"kafka://{bootstrap}", name=name) for name in streams or []],
            outputs=[Dataset(namespace=storage, name=fixed_part(self.path_prefix) or "/")],
        )


def _lags(consumer: Any, streams: list[str]) -> dict[str, dict[int, int]]:
    """Per stream and partition, the offsets behind its end now, in one read of them all; none when Kafka does not
    answer: the export is committed, the lag is only information."""
    try:
        return streams_lag(consumer, streams) if streams else {}
    except Exception:
        return {}


def _merged(results: list[tuple[str, ExportResult]]) -> ExportResult:
    """One summary of the sets a task exported over several streams (each partition names its stream)."""
    merged = ExportResult(committed=all(r.committed for _, r in results))
    for _, result in results:
        merged.events += result.events
        merged.bytes += result.bytes
        merged.stored_bytes += result.stored_bytes
        merged.files += result.files
        merged.dead_letters += result.dead_letters
        merged.dead_letter_files += result.dead_letter_files
        for reason, count in result.dead_letter_reasons.items():
            merged.dead_letter_reasons[reason] = merged.dead_letter_reasons.get(reason, 0) + count
        merged.partitions += result.partitions
        merged.lost_to_retention += result.lost_to_retention
    return merged
