"""The policy service: an OpenAI-compatible HTTP API in front of the policy, and one narrow door per rollout.

Two servers share one backend:

- **The API** on 127.0.0.1, with a key: chat completions, completions (with
  `echo` + `max_tokens=0` to score a prompt), `/v1/models`, and the admin
  endpoints `POST /v1/sia/adapters` (load a LoRA adapter folder under a new
  model name, without a restart) and `GET /v1/sia/stats`. It is what external
  clients, `--feedback-model openai:...@` pointed at sia, and tests use. It
  records nothing.
- **The door**: a Unix socket per rollout (`sia.policy.door`), which the
  sandbox mounts as its only way out. A rollout gets a socket and a token from
  `open_door(rollout, model)`; requests with that token are served as that
  rollout, on that rollout's model, within its limits (connections, requests in
  flight, tokens, body size), and recorded under its id: messages or prompt,
  prompt and completion token ids, per-token logprobs. Only completion,
  scoring, embeddings and `render_chat` exist there. Nothing a harness sends (a
  header, a model name) can make a call count for another rollout or reach an
  adapter it was not given. `close_door` returns the `DoorRecord` and cancels
  what the rollout still has in flight.

Every request body is data from outside: it is read up to `max_body_mb`,
parsed without NaN, oversized integers or unencodable strings
(`sia.values`), and validated field by field, so a bad field fails its own
request only, never others batched with it. A failure on the policy's side
(an engine error, an unreachable upstream) is recorded on the rollout's door:
that record, not what a harness reports, is what makes a rollout's error the
policy's.

Two backends (`sia.policy.backends`) sit behind it: `LocalBackend` (the
in-process model, batched) and `RemoteBackend`, a recording proxy to any
external OpenAI-compatible endpoint, so harnesses never see remote keys.

Exploration for training: `explore(prefix, temperature)` makes every
generation of rollouts whose id starts with `prefix` sample at `temperature`,
whatever the harness asked for (a harness usually decodes greedily); the
recorded params show the temperature used. This is how the weight lever
collects G different samples per example through an unchanged harness.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from sia import values
from sia.errors import PolicyError
from sia.policy.backends import (
    CANCELLED,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    HTTPError,
    LocalBackend,
    RemoteBackend,
    within_tokens,
)
from sia.policy.door import Door, DoorLimits, DoorRecord, DoorState, Relays

__all__ = ["ChatRequest", "CompletionRequest", "Door", "DoorLimits", "DoorRecord", "HTTPError", "LocalBackend", "PolicyService",
           "RemoteBackend"]


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": kind}}, status_code=status)


class PolicyService:
    """Runs the API on 127.0.0.1 and the door on a Unix socket, each in a background thread."""

    def __init__(self, backend: LocalBackend | RemoteBackend, api_key: str | None = None, limits: DoorLimits | None = None) -> None:
        self.backend = backend
        self.api_key = api_key if api_key is not None else secrets.token_hex(16)
        self.limits = limits or DoorLimits()
        self._calls: dict[str, list[dict[str, Any]]] = {}
        self._doors: dict[str, DoorState] = {}
        self._explore: dict[str, float] = {}
        self._lock = threading.Lock()
        self.requests = 0
        self.adapter_hashes: dict[str, str] = {}
        """Served adapter name -> content hash, set once the adapter's canary passed (`PolicyRuntime.load_adapter`)."""
        self._servers: list[tuple[Any, threading.Thread]] = []
        self._dirs: list[Path] = []
        self.relays: Relays | None = None
        self.url = ""

    # -- doors and recording ------------------------------------------------------------------
    def open_door(self, rollout: str, model: str) -> Door:
        """A socket and a token that serve `model` to rollout `rollout` only, within the door's limits."""
        if self.relays is None:
            raise PolicyError("the policy service is not started", "start it before opening doors")
        token = secrets.token_hex(24)
        door = Door(self.relays.open(token, self.limits.max_connections), token, model, rollout)
        with self._lock:
            self._doors[token] = DoorState(door)
            self._calls.pop(rollout, None)  # leftovers of an earlier, killed attempt
        return door

    def close_door(self, door: Door) -> DoorRecord:
        """Shut the door: its socket and connections close, its requests in flight are cancelled; what it recorded."""
        if self.relays is not None:
            self.relays.close(door.token)
        with self._lock:
            state = self._doors.pop(door.token, None) or DoorState(door)
            calls = self._calls.pop(door.rollout, [])
        if state.in_flight:
            self.backend.cancel(door.rollout)
        return DoorRecord(calls, list(state.failures), state.in_flight, state.asked, state.refused, state.tokens)

    def healthy(self) -> bool:
        """Whether the API, the door app and the relays are all still serving."""
        threads = [t for _, t in self._servers] + ([self.relays._thread] if self.relays is not None else [])
        return bool(threads) and all(t.is_alive() for t in threads)

    def _record(self, rollout: str, record: dict[str, Any], t0: float) -> None:
        """Keep a call for its rollout, with the content hash of the adapter that answered it (None: the base model)."""
        with self._lock:
            self.requests += 1
            if rollout:
                adapter = self.adapter_hashes.get(record.get("model") or "")
                self._calls.setdefault(rollout, []).append({**record, "adapter_sha256": adapter, "t": t0,
                                                            "latency_s": time.time() - t0})

    def explore(self, prefix: str, temperature: float | None) -> None:
        """Sample generations of rollouts with ids starting `prefix` at `temperature` (None ends it)."""
        with self._lock:
            if temperature is None:
                self._explore.pop(prefix, None)
            else:
                self._explore[prefix] = temperature

    def _exploring(self, rollout: str, req: Any) -> None:
        """`req`: a chat or completion request (an embedding request has no temperature and is left alone)."""
        if not self._explore or getattr(req, "max_tokens", None) == 0 or "temperature" not in type(req).model_fields:
            return
        with self._lock:
            temps = [t for p, t in self._explore.items() if rollout.startswith(p)]
        if temps:
            req.temperature = temps[0]

    # -- HTTP -------------------------------------------------------------------------------
    async def _body(self, request: Request) -> Any:
        """The request's JSON body, read up to the size limit and checked as data (`sia.values`); ValueError otherwise."""
        cap = int(self.limits.max_body_mb * 1024 * 1024)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise ValueError(f"the body is {declared} bytes; the limit is {cap}")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > cap:
                raise ValueError(f"the body is over the limit of {cap} bytes")
        return values.loads(bytes(raw))

    def _admit(self, state: DoorState, req: Any) -> JSONResponse | None:
        """Count a request against its rollout's limits; the refusal, or None once admitted (and cut to the tokens left)."""
        with self._lock:
            state.asked = True
            left = self.limits.max_tokens - state.tokens
            if state.in_flight >= self.limits.max_concurrent:
                state.refused += 1
                return _error(429, f"this rollout already has {state.in_flight} requests in flight (the limit)", "rate_limit_exceeded")
            if left <= 0:
                state.refused += 1
                return _error(400, f"this rollout has spent its {self.limits.max_tokens} tokens", "rollout_quota_exceeded")
            state.in_flight += 1
        within_tokens(req, left)
        req.model = state.door.model
        self._exploring(state.door.rollout, req)
        return None

    async def _handle(self, request: Request, model_cls, method, state: DoorState | None):
        t0 = time.time()
        try:
            req = model_cls.model_validate(await self._body(request))
        except ValidationError as e:
            first = e.errors()[0]
            return _error(400, f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}"[:500])
        except (ValueError, RecursionError) as e:  # malformed, oversized or unfit JSON
            return _error(400, f"bad request body: {str(e)[:200]}")
        if state is not None and (refusal := self._admit(state, req)) is not None:
            return refusal
        rollout, used = state.door.rollout if state else "", 0
        try:
            resp, record = await method(req, rollout)
            used = int((resp.get("usage") or {}).get("total_tokens") or 0)
        except HTTPError as e:
            if e.status >= 500 and e.status != CANCELLED:
                self._failed(state, e.message)
            return _error(e.status, e.message, e.kind)
        except Exception as e:  # the engine's failure: this request's, and recorded as the policy's
            self._failed(state, f"{type(e).__name__}: {e}")
            return _error(500, f"the policy failed: {type(e).__name__}: {str(e)[:300]}", "server_error")
        finally:
            if state is not None:
                with self._lock:
                    state.in_flight -= 1
                    state.tokens += used
        self._record(rollout, record, t0)
        return JSONResponse(resp)

    def _failed(self, state: DoorState | None, message: str) -> None:
        if state is not None:
            with self._lock:
                state.failures.append(values.clean_text(message, 500))

    async def _render_chat(self, request: Request):
        try:
            body = await self._body(request)
            messages = ChatRequest.model_validate({"model": "-", "messages": body["messages"]}).messages
            return {"prompt": await self.backend.render_chat(messages)}
        except HTTPError as e:
            return _error(e.status, e.message, e.kind)
        except (KeyError, TypeError, ValueError, RecursionError) as e:
            return _error(400, f"bad request body: {str(e)[:200]}")

    def _api(self) -> FastAPI:
        app = FastAPI(title="sia policy service", docs_url=None, redoc_url=None)

        @app.middleware("http")
        async def auth(request: Request, call_next):
            if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
                return _error(401, "missing or wrong API key", "invalid_api_key")
            return await call_next(request)

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "sia"} for m in self.backend.model_names()]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await self._handle(request, ChatRequest, self.backend.chat, None)

        @app.post("/v1/completions")
        async def completions(request: Request):
            return await self._handle(request, CompletionRequest, self.backend.completions, None)

        @app.post("/v1/embeddings")
        async def embeddings(request: Request):
            return await self._handle(request, EmbeddingRequest, self.backend.embeddings, None)

        @app.post("/v1/sia/render_chat")
        async def render_chat(request: Request):
            return await self._render_chat(request)

        @app.post("/v1/sia/adapters")
        async def load_adapter(request: Request):
            """Load a LoRA adapter folder and serve it under `name` without restarting."""
            try:
                body = await request.json()
                return {"models": await self.backend.load_adapter(str(body["name"]), str(body["path"]))}
            except HTTPError as e:
                return _error(e.status, e.message, e.kind)
            except (KeyError, TypeError, ValueError) as e:
                return _error(400, f"bad request body: {e}")

        @app.get("/v1/sia/stats")
        async def stats():
            return {**self.backend.stats(), "requests": self.requests}

        return app

    def _door_app(self) -> FastAPI:
        app = FastAPI(title="sia policy door", docs_url=None, redoc_url=None, openapi_url=None)

        def door_of(request: Request) -> DoorState | None:
            auth = request.headers.get("authorization", "")
            with self._lock:
                return self._doors.get(auth.removeprefix("Bearer ").strip())

        closed = lambda: _error(401, "this door is closed (unknown or expired rollout token)", "invalid_api_key")  # noqa: E731

        @app.middleware("http")
        async def auth(request: Request, call_next):
            return closed() if door_of(request) is None else await call_next(request)

        async def served(request: Request, model_cls, method):
            state = door_of(request)  # looked up again: the door may have closed since the middleware's look
            return closed() if state is None else await self._handle(request, model_cls, method, state)

        @app.get("/v1/models")
        async def models(request: Request):
            state = door_of(request)
            return closed() if state is None else {"object": "list", "data": [{"id": state.door.model, "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await served(request, ChatRequest, self.backend.chat)

        @app.post("/v1/completions")
        async def completions(request: Request):
            return await served(request, CompletionRequest, self.backend.completions)

        @app.post("/v1/embeddings")
        async def embeddings(request: Request):
            return await served(request, EmbeddingRequest, self.backend.embeddings)

        @app.post("/v1/sia/render_chat")
        async def render_chat(request: Request):
            return await self._render_chat(request)

        return app

    def _serve(self, app: FastAPI, sock: socket.socket, name: str) -> None:
        import uvicorn

        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise PolicyError("the policy service did not start", "check that loopback networking and Unix sockets work")
            time.sleep(0.01)
        self._servers.append((server, thread))

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((host, port))
        self._serve(self._api(), tcp, "sia-policy-http")
        self.url = f"http://{host}:{tcp.getsockname()[1]}/v1"
        inner_dir, door_dir = Path(tempfile.mkdtemp(prefix="sia-policy-")), Path(tempfile.mkdtemp(prefix="sia-door-"))
        self._dirs = [inner_dir, door_dir]  # mode 0700: only this user reaches the sockets; no sandbox sees inner_dir
        inner = str(inner_dir / "door.sock")
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(inner)
        os.chmod(inner, 0o600)
        self._serve(self._door_app(), unix, "sia-policy-door")
        self.relays = Relays(inner, door_dir)
        return self.url

    def stop(self) -> None:
        if self.relays is not None:
            self.relays.stop()
        for server, _ in self._servers:
            server.should_exit = True
        for _, thread in self._servers:
            thread.join(timeout=10)
        self._servers.clear()
        for folder in self._dirs:
            shutil.rmtree(folder, ignore_errors=True)
        self.backend.close()

    def __enter__(self) -> PolicyService:
        if not self.url:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
