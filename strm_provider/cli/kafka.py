"""What the CLI does to Kafka: pin a new exporter's start, create a stream, produce demo events."""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from strm_provider.cli.store import ConnectorStore


def _hook_over(conn: Any) -> Any:
    """A :class:`StrmKafkaHook` reading ``conn`` as given (the store's copy, not Airflow's lookup)."""
    from strm_provider.hooks.kafka import StrmKafkaHook

    hook = StrmKafkaHook(conn.conn_id)
    hook.get_connection = lambda _conn_id: conn  # type: ignore[method-assign]
    return hook


def kafka_hook(store: ConnectorStore, conn_id: str, option: str = "'--kafka-connection'") -> Any:
    """A :class:`StrmKafkaHook` over the connection as the store holds it."""
    conn = store.connection(conn_id)
    if conn is None:
        raise click.BadParameter(
            f"no Kafka connection '{conn_id}' in the {store.where}; add one, e.g. "
            f"`airflow connections add {conn_id} --conn-type strm_kafka --conn-host HOST:9092`",
            param_hint=option,
        )
    if (conn.conn_type or "") != "strm_kafka":
        raise click.BadParameter(
            f"connection '{conn_id}' has type '{conn.conn_type}', expected 'strm_kafka'", param_hint=option
        )
    return _hook_over(conn)


def plaintext_hook(bootstrap_servers: str) -> Any:
    """A :class:`StrmKafkaHook` over PLAINTEXT brokers given on the command line (``--bootstrap-servers``)."""
    from airflow.models import Connection

    return _hook_over(
        Connection(
            conn_id="--bootstrap-servers",
            conn_type="strm_kafka",
            host=bootstrap_servers,
            extra=json.dumps({"security_protocol": "PLAINTEXT"}),
        )
    )


def client(make: Callable[[], Any]) -> Any:
    """``make()``, a Kafka client from a hook, with a refusal (unreachable, authentication, TLS, a bad
    connection field) as one line."""
    from strm_provider.hooks.kafka import KafkaUnavailable

    try:
        return make()
    except (KafkaUnavailable, ValueError) as err:
        raise click.ClickException(f"Kafka: {err}") from None


def partitions_of(consumer: Any, stream: str) -> list[int]:
    return sorted(consumer.partitions_for_topic(stream) or ())


def check_stream(hook: Any, stream: str) -> None:
    """Refuse (exit 2) before anything is written when the stream does not exist."""
    consumer = _consumer(hook)
    try:
        if not partitions_of(consumer, stream):
            raise click.BadParameter(
                f"stream '{stream}' does not exist on the Kafka cluster at {hook.bootstrap_servers}; "
                f"create it first (`strm create stream {stream}`)",
                param_hint="'STREAM'",
            )
    finally:
        with contextlib.suppress(Exception):
            consumer.close()


def pin_start(hook: Any, stream: str, group_id: str, *, include_existing_events: bool) -> dict[int, int]:
    """Commit where a new exporter starts (:func:`strm_provider.offsets.pin_start`), refusing a missing stream."""
    from strm_provider import offsets

    consumer = _consumer(hook, group_id)
    try:
        return offsets.pin_start(consumer, stream, include_existing_events=include_existing_events)
    except LookupError:
        raise click.BadParameter(
            f"stream '{stream}' does not exist on the Kafka cluster at {hook.bootstrap_servers}; "
            f"create it first (`strm create stream {stream}`)",
            param_hint="'STREAM'",
        ) from None
    finally:
        with contextlib.suppress(Exception):
            consumer.close()


def _consumer(hook: Any, group_id: str | None = None) -> Any:
    return client(lambda: hook.consumer(group_id, request_timeout_ms=15_000))


def create_stream(admin: Any, stream: str, partitions: int) -> bool:
    """Create the topic and wait until the cluster serves its partitions; False if it exists already."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    try:
        admin.create_topics([NewTopic(stream, partitions, 1)])
    except TopicAlreadyExistsError:
        return False
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        described = admin.describe_topics([stream])
        if described and len(described[0].get("partitions") or ()) >= partitions:
            break
        time.sleep(0.1)
    return True


def simulate(producer: Any, stream: str, partitions: list[int], *, rate: float, count: int | None) -> int:
    """Produce random clickstream events round-robin over ``partitions`` at ``rate``/s; return how many."""
    from strm_provider.simulate import random_event

    rng = random.Random()
    sent = 0
    start = last = time.monotonic()
    tty = sys.stderr.isatty()

    def progress(final: bool = False) -> None:
        elapsed = max(time.monotonic() - start, 1e-9)
        text = f"sent {sent} events to stream '{stream}' ({sent / elapsed:.0f}/s)"
        if tty:
            click.echo(f"\r{text}", err=True, nl=final)
        else:
            click.echo(text, err=True)

    try:
        while count is None or sent < count:
            due = start + sent / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            event = random_event(rng)
            producer.send(stream, json.dumps(event).encode(), partition=partitions[sent % len(partitions)])
            sent += 1
            if time.monotonic() - last >= 1.0:
                last = time.monotonic()
                progress()
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush(timeout=30)
        progress(final=True)
    return sent
