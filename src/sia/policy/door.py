"""A rollout's door to the policy: its own Unix socket, its limits, and what the service recorded through it.

Each rollout gets a socket of its own (`Relays`), which the sandbox mounts as
its only way out. Connections to it are relayed, byte for byte, to the policy
service's door app (uvicorn and FastAPI, on a socket no sandbox sees), which
serves each request as the rollout its token names, within `DoorLimits`:

- **connections**: a socket per rollout makes every connection attributable
  when it is accepted, before a byte is read; past `max_connections` a new one
  is closed at once. (One shared socket counted connections only for the
  server as a whole: a rollout that opened thousands of idle ones took sia to
  4,097 open files.) At most `max_connections` x 3 descriptors per rollout are
  sia's: the accepted connection, the relayed one and the app's end of it.
- **requests in flight** (`max_concurrent`, HTTP 429 past it), **tokens**
  (prompt and completion tokens of all its requests: `max_tokens`; a
  generation is cut to what is left, and a request once it is spent is refused)
  and **request bodies** (`max_body_mb`), checked by the service.
- **closing**: when the rollout ends, its socket and every connection on it are
  closed and every request it still has in flight is cancelled in the engine
  (`sia.policy.batcher.Batcher.cancel`), so a dead rollout's long request stops
  costing the model.

Why a relay of our own: uvicorn serves a fixed list of sockets, so it cannot
open and close one per rollout or count a rollout's connections; the relay is
a small asyncio loop that only copies bytes, and HTTP stays uvicorn's.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DoorLimits:
    max_connections: int = 8
    """Open connections one rollout may hold to its door at once; more are closed on arrival."""
    max_concurrent: int = 4
    """Requests of one rollout in flight at once; more are answered 429 (the harness client retries)."""
    max_tokens: int = 262_144
    """Prompt and completion tokens one rollout may spend in all; a generation is cut to what is left."""
    max_body_mb: float = 4.0
    """Largest request body, in MB."""


@dataclass(frozen=True)
class Door:
    """A rollout's way to the policy: its Unix socket, its token, and the model it is served."""

    socket: str
    token: str
    model: str
    rollout: str


@dataclass
class DoorState:
    """What the service counts for one open door."""

    door: Door
    in_flight: int = 0
    tokens: int = 0
    asked: bool = False
    refused: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DoorRecord:
    """What the service recorded for a rollout when its door closed."""

    calls: list[dict[str, Any]]
    """The rollout's model calls, in order: messages or prompt, token ids, logprobs."""
    failures: list[str]
    """Requests that failed on the policy's side (an engine or upstream error): only these make a rollout's error the
    policy's, whatever the harness reports."""
    in_flight: int
    """Requests still running when the door closed (cancelled then): the rollout was waiting on the policy."""
    asked: bool
    """Whether the rollout sent any request."""
    refused: int
    """Requests refused by the door's limits."""
    tokens: int


class Relays:
    """One Unix socket per open door, relayed to the service's door app, each with a cap on open connections."""

    def __init__(self, inner: str, folder: Path) -> None:
        self.inner, self.folder = inner, folder
        self.loop = asyncio.new_event_loop()
        self._servers: dict[str, tuple[asyncio.Server, set[asyncio.StreamWriter], int]] = {}
        self._thread = threading.Thread(target=self.loop.run_forever, name="sia-door-relay", daemon=True)
        self._thread.start()

    def _call(self, coro, timeout_s: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def open(self, key: str, max_connections: int) -> str:
        """A new socket for `key`; its path."""
        path = str(self.folder / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".sock"))
        self._call(self._open(key, path, max_connections))
        os.chmod(path, 0o600)
        return path

    async def _open(self, key: str, path: str, cap: int) -> None:
        conns: set[asyncio.StreamWriter] = set()  # both ends of every relayed connection
        clients: set[asyncio.StreamWriter] = set()

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if len(clients) >= cap or key not in self._servers:
                writer.transport.abort()
                return
            clients.add(writer)
            conns.add(writer)
            up = None
            try:
                up_reader, up = await asyncio.open_unix_connection(self.inner)
                conns.add(up)
                copies = [asyncio.ensure_future(_copy(reader, up)), asyncio.ensure_future(_copy(up_reader, writer))]
                await asyncio.wait(copies, return_when=asyncio.FIRST_COMPLETED)
                for c in copies:
                    c.cancel()
            except OSError:
                pass
            finally:
                clients.discard(writer)
                for w in (writer, up):
                    if w is not None:
                        conns.discard(w)
                        w.transport.abort()

        server = await asyncio.start_unix_server(relay, path=path, backlog=max(1, cap))
        self._servers[key] = (server, conns, cap)

    def close(self, key: str) -> None:
        """Close `key`'s socket and every connection on it."""
        try:
            self._call(self._close(key))
        except RuntimeError:  # the loop has stopped: nothing is served any more
            pass

    async def _close(self, key: str) -> None:
        entry = self._servers.pop(key, None)
        if entry is None:
            return
        server, conns, _ = entry
        server.close()
        for w in list(conns):
            w.transport.abort()
        conns.clear()
        for sock in server.sockets:
            try:
                os.unlink(sock.getsockname())
            except (OSError, TypeError):
                pass

    def connections(self, key: str | None = None) -> int:
        """Connections open now (one door's, or all), counting both ends the relay holds."""
        entries = [self._servers[key]] if key is not None and key in self._servers else [] if key else list(self._servers.values())
        return sum(len(conns) for _, conns, _ in entries)

    def stop(self) -> None:
        for key in list(self._servers):
            self.close(key)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()
