"""A TCP forwarder the tests can take down and bring back: PostgreSQL "stops" for the
retrainer (new connections cut at once, open ones cut) without touching the shared
server. Its port stays bound from start to `close()`, so no other process can take it
between an outage and the recovery."""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.port = self._listener.getsockname()[1]
        self._up = False
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def up(self) -> None:
        with self._lock:
            self._up = True

    def down(self) -> None:
        """Cuts every open connection; new ones are closed as soon as they are accepted."""
        with self._lock:
            self._up = False
            for connection in self._connections:
                _shut(connection)
                connection.close()
            self._connections.clear()

    def close(self) -> None:
        self.down()
        _shut(self._listener)  # wakes the blocked accept()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if not self._up:
                    _shut(client)
                    client.close()
                    continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                _shut(s)


def _shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
