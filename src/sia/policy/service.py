"""The policy service: an OpenAI-compatible HTTP API on loopback in front of the policy.

Harness processes reach the model only through it. The `model` field selects
the adapter (the base model's name or "base"; trained adapters join later).
Every call that carries an `X-Sia-Rollout` header is recorded under that
rollout id: messages or prompt, prompt and completion token ids, and per-token
logprobs. The executor collects the record when the rollout ends.

Two backends (`sia.policy.backends`) sit behind the same API: `LocalBackend` (the in-process model,
batched) and `RemoteBackend`, a recording proxy to any external
OpenAI-compatible endpoint (vLLM, llama.cpp server, hosted APIs), so harnesses
never see remote API keys and every call is recorded the same way.

Supported subset: chat completions and completions, non-streaming; `n`,
`temperature`, `top_p`, `max_tokens`, `stop`, `seed`, `logprobs`; completions
with `echo` and `max_tokens=0` score a prompt. `POST /v1/sia/render_chat` turns
messages into the model's chat prompt and `POST /v1/sia/adapters` loads a LoRA
adapter folder under a new model name, without a restart (local backend only).

Exploration for training: `explore(prefix, temperature)` makes every generation
request of rollouts whose id starts with `prefix` sample at `temperature`,
whatever the harness asked for (a harness usually decodes greedily). The
recorded params show the temperature actually used. This is how the weight
lever collects G different samples per example through an unchanged harness.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from sia.errors import PolicyError
from sia.policy.backends import ChatRequest, CompletionRequest, HTTPError, LocalBackend, RemoteBackend

__all__ = ["ChatRequest", "CompletionRequest", "HTTPError", "LocalBackend", "PolicyService", "RemoteBackend"]


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": kind}}, status_code=status)


class PolicyService:
    """Runs the API on 127.0.0.1 in a background thread; records calls per rollout."""

    def __init__(self, backend: LocalBackend | RemoteBackend, api_key: str | None = None) -> None:
        self.backend = backend
        self.api_key = api_key if api_key is not None else secrets.token_hex(16)
        self._calls: dict[str, list[dict[str, Any]]] = {}
        self._explore: dict[str, float] = {}
        self._lock = threading.Lock()
        self.requests = 0
        self.app = self._build_app()
        self._server = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- recording --------------------------------------------------------------------------
    def _record(self, rollout: str | None, record: dict[str, Any], t0: float) -> None:
        with self._lock:
            self.requests += 1
            if rollout:
                record = {**record, "t": t0, "latency_s": time.time() - t0}
                self._calls.setdefault(rollout, []).append(record)

    def pop_calls(self, rollout: str) -> list[dict[str, Any]]:
        with self._lock:
            return self._calls.pop(rollout, [])

    def explore(self, prefix: str, temperature: float | None) -> None:
        """Sample generations of rollouts with ids starting `prefix` at `temperature` (None ends it)."""
        with self._lock:
            if temperature is None:
                self._explore.pop(prefix, None)
            else:
                self._explore[prefix] = temperature

    def _exploring(self, rollout: str | None, req: BaseModel) -> None:
        if not rollout or not self._explore or getattr(req, "max_tokens", None) == 0:
            return
        with self._lock:
            temps = [t for p, t in self._explore.items() if rollout.startswith(p)]
        if temps:
            req.temperature = temps[0]

    # -- HTTP -------------------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        app = FastAPI(title="sia policy service", docs_url=None, redoc_url=None)

        @app.middleware("http")
        async def auth(request: Request, call_next):
            if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
                return _error(401, "missing or wrong API key", "invalid_api_key")
            return await call_next(request)

        async def handle(request: Request, model_cls, method):
            t0 = time.time()
            try:
                body = await request.json()
                req = model_cls.model_validate(body)
                self._exploring(request.headers.get("x-sia-rollout"), req)
                resp, record = await method(req)
            except ValidationError as e:
                first = e.errors()[0]
                return _error(400, f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}")
            except HTTPError as e:
                return _error(e.status, e.message, e.kind)
            except ValueError as e:  # malformed JSON body
                return _error(400, f"bad request body: {e}")
            self._record(request.headers.get("x-sia-rollout"), record, t0)
            return JSONResponse(resp)

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "sia"} for m in self.backend.model_names()]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await handle(request, ChatRequest, self.backend.chat)

        @app.post("/v1/completions")
        async def completions(request: Request):
            return await handle(request, CompletionRequest, self.backend.completions)

        @app.post("/v1/sia/render_chat")
        async def render_chat(request: Request):
            try:
                body = await request.json()
                return {"prompt": await self.backend.render_chat(body["messages"])}
            except HTTPError as e:
                return _error(e.status, e.message, e.kind)
            except (KeyError, TypeError, ValueError) as e:
                return _error(400, f"bad request body: {e}")

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

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="sia-policy-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise PolicyError("the policy service did not start", "check that loopback networking works")
            time.sleep(0.01)
        self.url = f"http://{host}:{port}/v1"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._thread:
                self._thread.join(timeout=10)
        self.backend.close()

    def __enter__(self) -> "PolicyService":
        if not self.url:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
