"""``strm create stream`` and ``strm simulate random-events``: Kafka topics and demo events.

Every Kafka client here comes from :class:`~strm_provider.hooks.kafka.StrmKafkaHook`, over the Kafka
connection (SASL and TLS included) or over PLAINTEXT brokers given with ``--bootstrap-servers``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import click

from strm_provider.cli.app import KAFKA_CONNECTION, create, simulate, store
from strm_provider.cli.connector_specs import ConnectorSpec
from strm_provider.cli.output import emit_json
from strm_provider.cli.store import ConnectorStore
from strm_provider.connection_types import KAFKA

URLS = [
    "https://www.strmprivacy.io/",
    "https://www.strmprivacy.io/rules",
    "https://www.strmprivacy.io/pricing",
    "https://www.strmprivacy.io/blog",
    "https://www.strmprivacy.io/docs",
]
EVENT_TYPES = ["", "click", "view", "scroll", "purchase"]
REFERRERS = ["", "https://www.google.com/", "https://news.ycombinator.com/", "https://twitter.com/"]
USER_AGENTS = [
    "",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1",
]


def _token(rng: random.Random, size: int) -> str:
    return base64.b64encode(rng.randbytes(size)).decode()


def random_event(rng: random.Random, billing_id: str = "demo8542234275", now_ms: int | None = None) -> dict[str, Any]:
    """One event with a clickstream's fields: ``strmMeta`` (schemaId, nonce, timestamp, keyLink,
    billingId, consentLevels), producerSessionId, url, eventType, referrer, userAgent, conversion,
    customer.id, abTests."""
    return {
        "strmMeta": {
            "schemaId": "clickstream",
            "nonce": rng.randrange(1 << 31),
            "timestamp": now_ms if now_ms is not None else int(time.time() * 1000),
            "keyLink": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "billingId": billing_id,
            "consentLevels": sorted(rng.sample([0, 1, 2, 3], rng.randint(0, 3))),
        },
        "producerSessionId": _token(rng, 32),
        "url": rng.choice(URLS),
        "eventType": rng.choice(EVENT_TYPES),
        "referrer": rng.choice(REFERRERS),
        "userAgent": rng.choice(USER_AGENTS),
        "conversion": rng.choice([0, 0, 0, 1]),
        "customer": {"id": _token(rng, 40)},
        "abTests": rng.sample(["header-a", "header-b", "cta-green", "cta-red"], rng.randint(0, 2)),
    }


def kafka_hook(store: ConnectorStore, conn_id: str, option: str = "'--kafka-connection'") -> Any:
    """A :class:`StrmKafkaHook` over the connection as the store holds it."""
    from strm_provider.hooks.kafka import StrmKafkaHook

    conn = store.connection(conn_id)
    if conn is None:
        raise click.BadParameter(
            f"no Kafka connection '{conn_id}' in the {store.where}; add one, e.g. "
            f"`airflow connections add {conn_id} --conn-type {KAFKA} --conn-host HOST:9092`",
            param_hint=option,
        )
    if (conn.conn_type or "") != KAFKA:
        raise click.BadParameter(
            f"connection '{conn_id}' has type '{conn.conn_type}', expected '{KAFKA}'", param_hint=option
        )
    return StrmKafkaHook.from_connection(conn)


def plaintext_hook(bootstrap_servers: str) -> Any:
    """A :class:`StrmKafkaHook` over PLAINTEXT brokers given on the command line (``--bootstrap-servers``)."""
    from strm_provider.hooks.kafka import StrmKafkaHook

    spec = ConnectorSpec("--bootstrap-servers", KAFKA, host=bootstrap_servers, extra={"security_protocol": "PLAINTEXT"})
    return StrmKafkaHook.from_connection(spec.to_connection())


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
    consumer = group_consumer(hook)
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


def pin_start(
    hook: Any, stream: str, group_id: str, *, include_existing_events: bool
) -> tuple[dict[int, int], str | None]:
    """Commit where a new exporter starts (:func:`strm_provider.offsets.pin_start`), refusing a missing stream.

    Returns the pinned offsets (none for a fresh group that starts at the earliest) and the topic's id,
    which the exporter's record in Airflow keeps beside them."""
    from strm_provider import offsets

    consumer = group_consumer(hook, group_id)
    try:
        pinned = offsets.pin_start(consumer, stream, include_existing_events=include_existing_events)
        return pinned, offsets.read_stream(consumer, stream).topic_id
    except LookupError:
        raise click.BadParameter(
            f"stream '{stream}' does not exist on the Kafka cluster at {hook.bootstrap_servers}; "
            f"create it first (`strm create stream {stream}`)",
            param_hint="'STREAM'",
        ) from None
    finally:
        with contextlib.suppress(Exception):
            consumer.close()


def group_consumer(hook: Any, group_id: str | None = None) -> Any:
    """A consumer of ``group_id`` (it never joins the group: offsets are read and committed by hand)."""
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


def produce_random_events(producer: Any, stream: str, partitions: list[int], *, rate: float, count: int | None) -> int:
    """Produce random clickstream events round-robin over ``partitions`` at ``rate``/s; return how many."""
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


def _kafka_hook(ctx: click.Context, kafka_connection: str, bootstrap_servers: str | None) -> Any:
    """The hook every Kafka client of a command comes from: the Kafka connection's, or PLAINTEXT brokers."""
    hook = plaintext_hook(bootstrap_servers) if bootstrap_servers else kafka_hook(store(ctx), kafka_connection)
    try:
        hook.client_config()
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--kafka-connection'") from None
    return hook


BOOTSTRAP = click.option(
    "--bootstrap-servers", metavar="HOST:PORT,...", help="Use these brokers instead of the Kafka connection (PLAINTEXT)"
)
STREAM_NAME = click.argument("stream")


def _check_stream(stream: str) -> str:
    from strm_provider.config import TOPIC_RE

    if not TOPIC_RE.match(stream):
        raise click.BadParameter(
            f"expected a Kafka topic name (letters, digits, '.', '_', '-'), got {stream!r}", param_hint="'STREAM'"
        )
    return stream


@create.command("stream")
@STREAM_NAME
@click.option("--partitions", type=click.IntRange(1, 10_000), default=5, show_default=True)
@KAFKA_CONNECTION
@BOOTSTRAP
@click.pass_context
def create_stream_cmd(
    ctx: click.Context, stream: str, partitions: int, kafka_connection: str, bootstrap_servers: str | None
) -> None:
    """Create STREAM (a Kafka topic) on the cluster of the Kafka connection."""
    _check_stream(stream)
    hook = _kafka_hook(ctx, kafka_connection, bootstrap_servers)
    admin = client(hook.admin)
    try:
        if not create_stream(admin, stream, partitions):
            raise click.BadParameter(f"stream '{stream}' exists already", param_hint="'STREAM'")
    finally:
        admin.close()
    emit_json({"ref": {"name": stream}, "partitions": partitions})


@simulate.command("random-events")
@STREAM_NAME
@click.option("--rate", type=click.FloatRange(min=0.001), default=10.0, show_default=True, help="Events per second")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events (default: until Ctrl-C)")
@click.option(
    "--partitions",
    type=click.IntRange(1, 10_000),
    default=5,
    show_default=True,
    help="Partitions of the stream when it has to be created",
)
@KAFKA_CONNECTION
@BOOTSTRAP
@click.pass_context
def random_events(
    ctx: click.Context,
    stream: str,
    rate: float,
    count: int | None,
    partitions: int,
    kafka_connection: str,
    bootstrap_servers: str | None,
) -> None:
    """Send random clickstream events to STREAM (created if missing)."""
    _check_stream(stream)
    hook = _kafka_hook(ctx, kafka_connection, bootstrap_servers)
    consumer = client(hook.consumer)
    try:
        existing = partitions_of(consumer, stream)
    finally:
        consumer.close()
    if not existing:
        admin = client(hook.admin)
        try:
            create_stream(admin, stream, partitions)
        finally:
            admin.close()
        click.echo(f"created stream '{stream}' with {partitions} partitions", err=True)
        existing = list(range(partitions))
    producer = client(hook.producer)
    try:
        produce_random_events(producer, stream, existing, rate=rate, count=count)
    finally:
        producer.close()
