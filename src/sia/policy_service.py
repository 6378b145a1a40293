"""The policy service: an OpenAI-compatible HTTP API on loopback in front of the policy.

Harness processes reach the model only through it. The `model` field selects
the adapter (the base model's name or "base"; trained adapters join later).
Every call that carries an `X-Sia-Rollout` header is recorded under that
rollout id: messages or prompt, prompt and completion token ids, and per-token
logprobs. The executor collects the record when the rollout ends.

Two backends sit behind the same API: `LocalBackend` (the in-process model,
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

import asyncio
import secrets
import socket
import threading
import time
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sia.batcher import Batcher
from sia.errors import PolicyError
from sia.policy import GenRequest, LocalPolicy


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=5)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    n: int = Field(1, ge=1, le=64)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str | list[str]
    temperature: float = Field(1.0, ge=0, le=5)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(16, ge=0)
    n: int = Field(1, ge=1, le=64)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False


def _stops(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


class HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class LocalBackend:
    """The in-process model behind a batcher."""

    def __init__(self, policy: LocalPolicy, max_batch: int = 32, window_s: float = 0.005) -> None:
        self.policy = policy
        self.batcher = Batcher(self._run_group, max_batch=max_batch, window_s=window_s, open_session=policy.session)

    def model_names(self) -> list[str]:
        return self.policy.model_names()

    def _run_group(self, kind: str, model: str, items: list[Any]) -> list[Any]:
        if kind == "generate":
            return self.policy.generate(items, model)
        return self.policy.score(items, model)

    def _check_model(self, model: str) -> str:
        if model not in self.model_names():
            raise HTTPError(404, f"model {model!r} not found; available: {self.model_names()}", "model_not_found")
        return model

    async def _submit(self, kind: str, model: str, items: list[Any]) -> list[Any]:
        return await asyncio.wrap_future(self.batcher.submit(kind, model, items))

    def _budget(self, prompt_ids: list[int], max_tokens: int | None) -> int:
        room = self.policy.config.max_context - len(prompt_ids)
        if room <= 0:
            raise HTTPError(400, f"prompt has {len(prompt_ids)} tokens; the context holds {self.policy.config.max_context}", "context_length_exceeded")
        return min(max_tokens if max_tokens is not None else room, room)

    async def chat(self, req: ChatRequest) -> tuple[dict, dict]:
        model = self._check_model(req.model)
        prompt = self.policy.render_chat(req.messages)
        prompt_ids = self.policy.encode(prompt)
        max_tokens = self._budget(prompt_ids, req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens)
        items = [GenRequest(prompt_ids, max_tokens, req.temperature, req.top_p, _stops(req.stop),
                            None if req.seed is None else req.seed + i) for i in range(req.n)]
        results = await self._submit("generate", model, items)
        choices = []
        for i, r in enumerate(results):
            choice: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": r.text},
                                      "finish_reason": r.finish_reason, "token_ids": r.token_ids}
            if req.logprobs:
                toks = self.policy.token_strings(r.token_ids)
                choice["logprobs"] = {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                                                  for t, lp in zip(toks, r.logprobs)]}
            choices.append(choice)
        n_out = sum(len(r.token_ids) for r in results)
        resp = {"id": f"chatcmpl-{secrets.token_hex(8)}", "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": choices, "prompt_token_ids": prompt_ids,
                "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": n_out, "total_tokens": len(prompt_ids) + n_out}}
        record = {"kind": "chat", "model": model, "messages": req.messages, "prompt": prompt, "prompt_token_ids": prompt_ids,
                  "params": _params(req), "completions": [_completion_record(r) for r in results]}
        return resp, record

    async def completions(self, req: CompletionRequest) -> tuple[dict, dict]:
        model = self._check_model(req.model)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise HTTPError(400, "prompt is empty")
        encoded = [self.policy.encode(p) for p in prompts]
        choices: list[dict[str, Any]] = []
        records = []
        if req.max_tokens == 0:
            if not req.echo:
                raise HTTPError(400, "max_tokens=0 needs echo=true (prompt scoring)")
            for ids in encoded:
                if not ids or len(ids) > self.policy.config.max_context:
                    raise HTTPError(400, f"a scored prompt must have 1 to {self.policy.config.max_context} tokens, not {len(ids)}")
            scored = (await self._submit("score", model, [encoded]))[0]
            for i, (p, ids, lps) in enumerate(zip(prompts, encoded, scored)):
                toks = self.policy.token_strings(ids)
                offsets, pos = [], 0
                for t in toks:
                    offsets.append(pos)
                    pos += len(t)
                choices.append({"index": i, "text": p, "finish_reason": "length", "token_ids": ids,
                                "logprobs": {"tokens": toks, "token_logprobs": lps, "text_offset": offsets, "top_logprobs": None}})
                records.append({"prompt": p, "prompt_token_ids": ids, "prompt_logprobs": lps})
            n_in = sum(len(x) for x in encoded)
            resp = {"id": f"cmpl-{secrets.token_hex(8)}", "object": "text_completion", "created": int(time.time()), "model": model,
                    "choices": choices, "usage": {"prompt_tokens": n_in, "completion_tokens": 0, "total_tokens": n_in}}
            return resp, {"kind": "score", "model": model, "params": _params(req), "prompts": records}
        items = []
        for ids in encoded:
            if not ids:
                raise HTTPError(400, "a prompt is empty; generation needs at least one token")
            mt = self._budget(ids, req.max_tokens)
            items += [GenRequest(ids, mt, req.temperature, req.top_p, _stops(req.stop), None if req.seed is None else req.seed + k)
                      for k in range(req.n)]
        results = await self._submit("generate", model, items)
        for i, r in enumerate(results):
            p = prompts[i // req.n]
            choice = {"index": i, "text": (p if req.echo else "") + r.text, "finish_reason": r.finish_reason, "token_ids": r.token_ids}
            if req.logprobs is not None:
                choice["logprobs"] = {"tokens": self.policy.token_strings(r.token_ids), "token_logprobs": r.logprobs,
                                      "text_offset": None, "top_logprobs": None}
            choices.append(choice)
        n_in = sum(len(x) for x in encoded) * req.n
        n_out = sum(len(r.token_ids) for r in results)
        resp = {"id": f"cmpl-{secrets.token_hex(8)}", "object": "text_completion", "created": int(time.time()), "model": model,
                "choices": choices, "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}}
        record = {"kind": "completion", "model": model, "params": _params(req),
                  "prompts": [{"prompt": p, "prompt_token_ids": ids} for p, ids in zip(prompts, encoded)],
                  "completions": [_completion_record(r) for r in results]}
        return resp, record

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return self.policy.render_chat(messages)

    async def load_adapter(self, name: str, path: str) -> list[str]:
        from sia.errors import PolicyError

        try:
            await asyncio.to_thread(self.policy.load_adapter, name, path)
        except PolicyError as e:
            raise HTTPError(400, str(e)) from None
        return self.model_names()

    def stats(self) -> dict[str, int]:
        return {"forward_passes": self.policy.forward_passes, "batches": self.batcher.batches, "jobs": self.batcher.jobs}

    def close(self) -> None:
        self.batcher.close()


def _params(req: BaseModel) -> dict[str, Any]:
    return req.model_dump(exclude={"messages", "prompt", "model"}, exclude_none=True)


def _completion_record(r) -> dict[str, Any]:
    return {"text": r.text, "token_ids": r.token_ids, "logprobs": r.logprobs, "finish_reason": r.finish_reason}


class RemoteBackend:
    """Forwards to an external OpenAI-compatible endpoint and records what comes back."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self.calls = 0

    def model_names(self) -> list[str]:
        return [self.model, "base"]

    async def _forward(self, path: str, body: dict) -> dict:
        body = {**body, "model": self.model}
        try:
            r = await self.client.post(path, json=body)
        except httpx.HTTPError as e:
            raise HTTPError(502, f"upstream {self.base_url} unreachable: {e}", "upstream_error") from None
        if r.status_code >= 400:
            raise HTTPError(r.status_code, f"upstream error: {r.text[:500]}", "upstream_error")
        self.calls += 1
        return r.json()

    async def chat(self, req: ChatRequest) -> tuple[dict, dict]:
        resp = await self._forward("/chat/completions", req.model_dump(exclude_none=True))
        comps = []
        for ch in resp.get("choices", []):
            content = (ch.get("logprobs") or {}).get("content") or []
            comps.append({"text": (ch.get("message") or {}).get("content") or "", "token_ids": ch.get("token_ids"),
                          "logprobs": [c.get("logprob") for c in content] or None, "finish_reason": ch.get("finish_reason")})
        record = {"kind": "chat", "model": self.model, "messages": req.messages, "prompt_token_ids": resp.get("prompt_token_ids"),
                  "params": _params(req), "completions": comps, "usage": resp.get("usage")}
        return resp, record

    async def completions(self, req: CompletionRequest) -> tuple[dict, dict]:
        resp = await self._forward("/completions", req.model_dump(exclude_none=True))
        comps = [{"text": ch.get("text", ""), "token_ids": ch.get("token_ids"),
                  "logprobs": (ch.get("logprobs") or {}).get("token_logprobs"), "finish_reason": ch.get("finish_reason")}
                 for ch in resp.get("choices", [])]
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        kind = "score" if req.max_tokens == 0 else "completion"
        record = {"kind": kind, "model": self.model, "params": _params(req), "prompts": [{"prompt": p} for p in prompts],
                  "completions": comps, "usage": resp.get("usage")}
        return resp, record

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        raise HTTPError(501, "render_chat is only available for the local policy", "not_supported")

    async def load_adapter(self, name: str, path: str) -> list[str]:
        raise HTTPError(501, "adapters are only served by the local policy; a remote endpoint serves its own", "not_supported")

    def stats(self) -> dict[str, int]:
        return {"upstream_calls": self.calls}

    def close(self) -> None:
        pass


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
