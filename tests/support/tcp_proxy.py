"""A TCP proxy on 127.0.0.1 that a test can cut: the database made unreachable for one server,
while the others (connected directly) keep using it.

    with Proxy(("127.0.0.1", 5432)) as proxy:   # proxy.port forwards to the target
        proxy.cut()        # every connection through it closes; new ones are closed at once
        proxy.restore()    # connections go through again

Threads only, bounded by the proxy's life; everything is closed on exit.
"""

from __future__ import annotations

import select
import socket
import threading


class Proxy:
    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._open = True  # connections go through
        self._closed = threading.Event()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cut(self) -> None:
        with self._lock:
            self._open = False
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            _close(*pair)

    def restore(self) -> None:
        with self._lock:
            self._open = True

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._listener.close()
        self._accepting.join(5)

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                allowed = self._open
            if not allowed:
                client.close()  # the database is "down": the connection ends at once
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:  # checked again: a cut may have come while connecting
                if not self._open:
                    _close(client, upstream)
                    continue
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._closed.is_set():
                readable, _, _ = select.select([a, b], [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            _close(a, b)
            with self._lock:
                if (a, b) in self._pairs:
                    self._pairs.remove((a, b))


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
