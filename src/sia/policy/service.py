"""The policy service: an OpenAI-compatible HTTP API in front of the policy, and one narrow door per rollout.

Two servers share one backend:

- **The API** on 127.0.0.1, with a key: chat completions, completions (with
  `echo` + `max_tokens=0` to score a prompt), `/v1/models`, and the admin
  endpoints `POST /v1/sia/adapters` (load a LoRA adapter folder under a new
  model name, without a restart) and `GET /v1/sia/stats`. It is what external
  clients, `--feedback-model openai:...@` pointed at sia, and tests use. It
  records nothing.
- **The door** on a Unix socket in a private folder, which the sandbox mounts
  as its only way out. A rollout gets a token from `open_door(rollout, model)`;
  requests with that token are served as that rollout, on that rollout's
  model, and recorded under its id: messages or prompt, prompt and completion
  token ids, per-token logprobs. Only completion, scoring and `render_chat`
  exist there. Nothing a harness sends (a header, a model name) can make a call
  count for another rollout or reach an adapter it was not given.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from sia.errors import PolicyError
from sia.policy.backends import ChatRequest, CompletionRequest, EmbeddingRequest, HTTPError, LocalBackend, RemoteBackend

__all__ = ["ChatRequest", "CompletionRequest", "Door", "HTTPError", "LocalBackend", "PolicyService", "RemoteBackend"]


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": kind}}, status_code=status)


@dataclass(frozen=True)
class Door:
    """A rollout's way to the policy: the Unix socket, its token, and the model it is served."""

    socket: str
    token: str
    model: str
    rollout: str


class PolicyService:
    """Runs the API on 127.0.0.1 and the door on a Unix socket, each in a background thread."""

    def __init__(self, backend: LocalBackend | RemoteBackend, api_key: str | None = None) -> None:
        self.backend = backend
        self.api_key = api_key if api_key is not None else secrets.token_hex(16)
        self._calls: dict[str, list[dict[str, Any]]] = {}
        self._doors: dict[str, Door] = {}
        self._asked: set[str] = set()
        self._explore: dict[str, float] = {}
        self._lock = threading.Lock()
        self.requests = 0
        self._servers: list[tuple[Any, threading.Thread]] = []
        self._door_dir: Path | None = None
        self.url = ""
        self.door_path = ""

    # -- doors and recording ------------------------------------------------------------------
    def open_door(self, rollout: str, model: str) -> Door:
        """A token that serves `model` to rollout `rollout` only, through the door socket."""
        door = Door(self.door_path, secrets.token_hex(24), model, rollout)
        with self._lock:
            self._doors[door.token] = door
            self._calls.pop(rollout, None)  # leftovers of an earlier, killed attempt
            self._asked.discard(rollout)
        return door

    def close_door(self, door: Door) -> list[dict[str, Any]]:
        """Shut the door and return the calls recorded through it."""
        with self._lock:
            self._doors.pop(door.token, None)
            self._asked.discard(door.rollout)
            return self._calls.pop(door.rollout, [])

    def asked(self, rollout: str) -> bool:
        """Whether the rollout has sent the policy a request (answered or not) through its open door: a rollout that
        timed out after its harness began (`sia.evaluation.executor.InfraWatch`) and without ever asking spent its time in its own
        code, which is not the machine's fault."""
        with self._lock:
            return rollout in self._asked

    def _record(self, rollout: str, record: dict[str, Any], t0: float) -> None:
        with self._lock:
            self.requests += 1
            if rollout:
                self._calls.setdefault(rollout, []).append({**record, "t": t0, "latency_s": time.time() - t0})

    def explore(self, prefix: str, temperature: float | None) -> None:
        """Sample generations of rollouts with ids starting `prefix` at `temperature` (None ends it)."""
        with self._lock:
            if temperature is None:
                self._explore.pop(prefix, None)
            else:
                self._explore[prefix] = temperature

    def _exploring(self, rollout: str, req: BaseModel) -> None:
        if not self._explore or getattr(req, "max_tokens", None) == 0 or "temperature" not in type(req).model_fields:
            return
        with self._lock:
            temps = [t for p, t in self._explore.items() if rollout.startswith(p)]
        if temps:
            req.temperature = temps[0]

    # -- HTTP -------------------------------------------------------------------------------
    async def _handle(self, request: Request, model_cls, method, door: Door | None):
        t0 = time.time()
        try:
            body = await request.json()
            req = model_cls.model_validate(body)
            if door is not None:
                with self._lock:
                    self._asked.add(door.rollout)
                req.model = door.model
                self._exploring(door.rollout, req)
            resp, record = await method(req)
        except ValidationError as e:
            first = e.errors()[0]
            return _error(400, f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}")
        except HTTPError as e:
            return _error(e.status, e.message, e.kind)
        except (ValueError, RecursionError) as e:  # malformed JSON body
            return _error(400, f"bad request body: {str(e)[:200]}")
        self._record(door.rollout if door else "", record, t0)
        return JSONResponse(resp)

    async def _render_chat(self, request: Request):
        try:
            body = await request.json()
            return {"prompt": await self.backend.render_chat(body["messages"])}
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

        def door_of(request: Request) -> Door | None:
            auth = request.headers.get("authorization", "")
            with self._lock:
                return self._doors.get(auth.removeprefix("Bearer ").strip())

        @app.middleware("http")
        async def auth(request: Request, call_next):
            if door_of(request) is None:
                return _error(401, "this door is closed (unknown or expired rollout token)", "invalid_api_key")
            return await call_next(request)

        @app.get("/v1/models")
        async def models(request: Request):
            return {"object": "list", "data": [{"id": door_of(request).model, "object": "model", "owned_by": "sia"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await self._handle(request, ChatRequest, self.backend.chat, door_of(request))

        @app.post("/v1/completions")
        async def completions(request: Request):
            return await self._handle(request, CompletionRequest, self.backend.completions, door_of(request))

        @app.post("/v1/embeddings")
        async def embeddings(request: Request):
            return await self._handle(request, EmbeddingRequest, self.backend.embeddings, door_of(request))

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
        self._door_dir = Path(tempfile.mkdtemp(prefix="sia-door-"))  # mode 0700: only this user reaches the socket
        self.door_path = str(self._door_dir / "policy.sock")
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(self.door_path)
        os.chmod(self.door_path, 0o600)
        self._serve(self._door_app(), unix, "sia-policy-door")
        return self.url

    def stop(self) -> None:
        for server, _ in self._servers:
            server.should_exit = True
        for _, thread in self._servers:
            thread.join(timeout=10)
        self._servers.clear()
        if self._door_dir is not None:
            shutil.rmtree(self._door_dir, ignore_errors=True)
        self.backend.close()

    def __enter__(self) -> "PolicyService":
        if not self.url:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
