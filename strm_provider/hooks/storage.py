"""The contract every storage hook (data connector) fulfils.

The export code only ever talks to :class:`StorageHook`; which concrete hook it gets is decided in one
place, :func:`strm_provider.hooks.storage_hook`, from the connection's type. Hooks only ever *write*:
the least-privilege policies we document grant nothing else (no list, no read, no head, no delete).
"""

from __future__ import annotations

import abc
import fcntl
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import IO, Any, TypeVar

from strm_provider.connection_settings import StorageSettings
from strm_provider.hooks.connection import ConnectionHook
from strm_provider.naming import validation_key

_Hook = TypeVar("_Hook")


class StorageError(Exception):
    """A storage operation failed; the message names the connection and the cause, never a secret."""


class StorageHook(ConnectionHook, abc.ABC):
    """A write-only view of one bucket or container, built from one Airflow connection.

    Subclasses set ``conn_type``/``hook_name``/``default_conn_name`` and ``settings_class`` (the model of
    their connection's settings), and implement :meth:`_upload_stream`. The object appears
    under its final name only when the upload completes (S3 multipart, GCS resumable, Azure block
    list), so a failed or killed upload never leaves a partial object under a final name.
    """

    conn_name_attr = "conn_id"
    settings_class = StorageSettings
    conn_type = ""
    hook_name = ""
    #: URI scheme of the Airflow Asset the exporter's DAG declares for its target.
    asset_scheme = ""

    def __init__(self, conn_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    # ----- what a subclass provides -------------------------------------------------------------
    @property
    @abc.abstractmethod
    def bucket(self) -> str:
        """Bucket or container name."""

    @abc.abstractmethod
    def _upload_stream(self, key: str, reader: IO[bytes]) -> None:
        """Upload everything ``reader`` yields to ``key``; commit the object only at EOF.

        Called in a background thread, so reading Kafka overlaps with uploading. Must raise
        :class:`StorageError` (or let the SDK error propagate) on failure.
        """

    @abc.abstractmethod
    def identity(self) -> str:
        """Who writes, as the storage knows it (an ARN, a service account, an application id); never a secret."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """The connector as ``strm get data-connector`` prints it, without secrets (e.g. ``{"s3Bucket": {...}}``)."""

    # ----- shared behaviour ---------------------------------------------------------------------
    @property
    def test_prefix(self) -> str:
        """Where :meth:`test_connection` writes its probe (the connection's extra ``test_prefix``, an exporter's
        path prefix: ``{date}``/``{hour}`` are filled from the current time)."""
        return str(self.settings.test_prefix)

    @property
    def test_compression(self) -> str:
        """The ending :meth:`test_connection` gives its probe: the connection's extra ``test_compression``
        (``none``, ``gzip``, ``zstd``), the ``compression`` of the exporters that write here."""
        return str(self.settings.test_compression)

    def settings_error(self, problem: str) -> StorageError:
        return StorageError(f"data connector '{self.conn_id}': {problem}")

    def asset_uri(self, prefix: str) -> str:
        """URI of the Airflow Asset for ``prefix`` in this bucket (``s3://bucket/prefix``)."""
        return f"{self.asset_scheme}://{self.bucket}/{prefix}".rstrip("/")

    @contextmanager
    def open_writer(self, key: str) -> Iterator[IO[bytes]]:
        """A binary stream whose bytes are uploaded to ``key`` while they are written.

        The upload runs in a background thread fed through an OS pipe, so memory stays bounded
        whatever the file size. On an exception inside the ``with`` block the upload is abandoned
        and no object appears under ``key``.
        """
        read_fd, write_fd = os.pipe()
        with suppress(AttributeError, OSError):  # Linux: 1 MiB instead of 64 KiB (Linux's pipe-max-size)
            # Each 64 KiB through the pipe cost both threads a syscall and a GIL hand-over: the upload
            # thread's reads of the pipe were 15% of a kafka-python export's samples (py-spy).
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 1 << 20)
        reader = os.fdopen(read_fd, "rb", buffering=1 << 20)
        writer = os.fdopen(write_fd, "wb", buffering=1 << 20)
        errors: list[BaseException] = []
        aborted = threading.Event()

        def run() -> None:
            try:
                self._upload_stream(key, _AbortableReader(reader, aborted))
            except BaseException as err:  # reported to the writer side
                errors.append(err)
            finally:
                reader.close()

        thread = threading.Thread(target=run, name=f"upload:{key}", daemon=True)
        thread.start()
        try:
            yield _CheckedWriter(writer, errors)
        except BaseException:
            aborted.set()
            raise
        finally:
            with suppress(BrokenPipeError):
                writer.close()
            thread.join()
        if errors:
            raise self._as_storage_error(errors[0], key) from errors[0]

    def write_empty(self, key: str, body: bytes = b"") -> None:
        """Write a file that holds no event (the validation file): ``body`` is empty, or an empty
        compressed stream."""
        with self.open_writer(key) as out:
            out.write(body)

    def write_test_file(self, prefix: str | None = None, compression: str | None = None) -> str:
        """Write the validation file as an exporter writing under ``prefix`` with ``compression`` writes its
        files, so it fails wherever they would: in the folder its files of this hour go to, with their
        ending (``.strm_test_<uuid4>.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``), holding no event. Defaults:
        the connection's ``test_prefix`` and ``test_compression``. Returns the key."""
        from strm_provider.writer import empty_file  # the writer builds on this module

        compression = self.test_compression if compression is None else compression
        key = validation_key(self.test_prefix if prefix is None else prefix, uuid.uuid4(), compression)
        self.write_empty(key, empty_file(compression))
        return key

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's Test button: prove the credentials by writing the empty validation file."""
        try:
            key = self.write_test_file()
        except Exception as err:
            return False, str(self._as_storage_error(err, "<test file>"))
        return True, f"Wrote {self.asset_uri(key)}" + "".join(f", {detail}" for detail in self.test_details())

    def test_details(self) -> Iterator[str]:
        """What the Test button reports after the file it wrote: the identity that wrote it."""
        yield f"as {self.identity()}"

    def _as_storage_error(self, err: BaseException, key: str) -> StorageError:
        """Turn an SDK error into one line naming the connection, the object and the cause."""
        if isinstance(err, StorageError):
            return err
        return StorageError(
            f"data connector '{self.conn_id}' ({self.conn_type}) could not write "
            f"{self.asset_uri(key)}: {self.explain(err)}"
        )

    def explain(self, err: BaseException) -> str:
        """Short cause of an SDK error; subclasses map their SDK's error codes."""
        return f"{type(err).__name__}: {err}"


class ProviderConnectionHook(StorageHook):
    """A data connector on an official provider's connection (``aws``, ``google_cloud_platform``, ``wasb``).

    Such a connection holds only credentials: the exporter names the bucket or container, and that
    provider's own hook reads the connection (:meth:`provider_hook`), so everything it supports works.
    Put it before the storage kind's hook in the bases, whose upload, naming and errors it keeps.
    """

    #: the connection is the official provider's to read; of its extra, only the Test button's settings count
    settings_class = StorageSettings

    def __init__(self, conn_id: str, *, bucket: str, **kwargs: Any) -> None:
        super().__init__(conn_id, **kwargs)
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        return self._bucket

    def provider_hook(self, hook_class: type[_Hook], **kwargs: Any) -> _Hook:
        """``hook_class(**kwargs)``, reading its connection through this hook's ``get_connection``.

        Outside a task, a provider hook's own lookup does not see the metadata database where the CLI
        found the connection (see :meth:`~strm_provider.hooks.connection.ConnectionHook.from_connection`),
        and some hooks read it in ``__init__``: only a subclass binds the lookup early enough.
        """
        owner = self

        class Bound(hook_class):  # type: ignore[valid-type,misc]
            def get_connection(self, conn_id: str) -> Any:  # type: ignore[override]
                return owner.get_connection(conn_id)

        return Bound(**kwargs)


def first_line(err: BaseException) -> str:
    """An SDK error's first line (its message without the trace ids and response dumps that follow), or its
    type when it says nothing."""
    text = str(err.args[0] if err.args else err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def read_full(reader: IO[bytes], size: int) -> bytes:
    """Read ``size`` bytes, fewer only at EOF.

    Reaching EOF always takes one empty ``read()``, which is where an abandoned export raises
    (:class:`_AbortableReader`), so a short final chunk is never mistaken for the end of a good file.
    """
    parts: list[bytes] = []
    remaining = size
    while remaining:
        data = reader.read(remaining)
        if not data:
            break
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)


class _AbortableReader:
    """Reader that raises instead of returning EOF when the writer side failed.

    Without this an abandoned upload would see a normal EOF and commit a truncated object.
    """

    def __init__(self, raw: IO[bytes], aborted: threading.Event) -> None:
        self._raw = raw
        self._aborted = aborted

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if not data and self._aborted.is_set():
            raise StorageError("upload abandoned: the export failed while writing")
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._raw.close()


class _CheckedWriter:
    """Writer that surfaces the upload thread's error instead of a bare ``BrokenPipeError``."""

    def __init__(self, raw: IO[bytes], errors: list[BaseException]) -> None:
        self._raw = raw
        self._errors = errors

    def write(self, data: bytes) -> int:
        try:
            return self._raw.write(data)
        except BrokenPipeError:
            if self._errors:
                raise self._errors[0] from None
            raise
