"""A TCP proxy on 127.0.0.1 that drops connections part-way, like a flaky network.

It forwards bytes both ways untouched (TLS passes through), and for the connections a
rule selects closes both sides after a number of bytes from the server: the client sees
its download stop mid-body.  ``on_cut`` runs at each cut (to move a clock, say).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Final

IO_TIMEOUT_S: Final = 15.0

CutRule = Callable[[int], int | None]  # connection number (1-based) -> bytes before cut


class CutProxy:
    def __init__(
        self, upstream_port: int, cut_after: CutRule, on_cut: Callable[[int], None] | None = None
    ) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.on_cut = on_cut
        self.connections = 0
        self.cuts = 0
        self.bytes_down = 0  # server -> client, over all connections
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="cutproxy", daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def __enter__(self) -> CutProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
            threading.Thread(
                target=self._serve,
                args=(client, number),
                name=f"cutproxy-{number}",
                daemon=True,
            ).start()

    def _serve(self, client: socket.socket, number: int) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self.upstream_port), IO_TIMEOUT_S)
        except OSError:
            client.close()
            return
        client.settimeout(IO_TIMEOUT_S)
        server.settimeout(IO_TIMEOUT_S)
        budget = self.cut_after(number)
        up = threading.Thread(
            target=self._pump, args=(client, server, None, number, False), daemon=True
        )
        up.start()
        self._pump(server, client, budget, number, True)
        for s in (client, server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        up.join(IO_TIMEOUT_S)

    def _pump(
        self, src: socket.socket, dst: socket.socket, budget: int | None, number: int, down: bool
    ) -> None:
        sent = 0
        while True:
            try:
                data = src.recv(16384)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            if budget is not None and sent + len(data) >= budget:
                data = data[: budget - sent]
                with contextlib.suppress(OSError):
                    dst.sendall(data)
                with self._lock:
                    self.bytes_down += len(data)
                    self.cuts += 1
                if self.on_cut is not None:
                    self.on_cut(number)
                return  # the caller closes both sockets: the connection drops here
            try:
                dst.sendall(data)
            except OSError:
                return
            sent += len(data)
            if down:
                with self._lock:
                    self.bytes_down += len(data)
