"""A small TCP proxy between a client and a server that a test can slow, cut, stop and restore.

It stands in for a storage endpoint that goes away, hangs or answers slowly, without mocking the
storage server itself: bytes still reach the real server when the proxy lets them through.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable

from devstack import free_port


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashed server or a dropped link would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """``127.0.0.1:<port>`` forwarding to ``127.0.0.1:<target_port>``.

    - ``delay``: seconds to sleep before forwarding each chunk (a slow storage);
    - ``hang``: accept connections but forward nothing (a storage that stopped answering);
    - :meth:`stop`: reset every connection and refuse new ones (the server is gone);
    - :meth:`start`: listen again on the same port (the server is back);
    - ``cut_after``: reset each connection once it forwarded that many bytes upstream (a flaky link);
    - ``on_upstream_bytes``: ``(threshold, callback)``, called once when that many bytes went upstream.
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.delay = 0.0
        self.hang = False
        self.cut_after: int | None = None
        self.cuts = 0
        self.upstream_bytes = 0
        self.on_upstream_bytes: tuple[int, Callable[[], None]] | None = None
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening and reset every open connection: connections are refused until :meth:`start`."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for sock in conns:
            _reset(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:
                _reset(client)
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.hang:
                    time.sleep(0.05)
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
                if up:
                    sent += len(data)
                    self._count(len(data))
                    if self.cut_after is not None and sent >= self.cut_after:
                        self.cuts += 1
                        _reset(src)
                        _reset(dst)
                        return
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._conns -= {src, dst}

    def _count(self, n: int) -> None:
        self.upstream_bytes += n
        trigger = self.on_upstream_bytes
        if trigger is not None and self.upstream_bytes >= trigger[0]:
            self.on_upstream_bytes = None
            trigger[1]()
