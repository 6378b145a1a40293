"""The two backends behind the policy service's API: the in-process model and a recording proxy.

`LocalBackend` serves `LocalPolicy` through the batcher (chat and completions,
prompt scoring with echo, adapters by name). `RemoteBackend` forwards the same
requests to an external OpenAI-compatible endpoint. Both return the response
and the record the service stores for the rollout, take the rollout a request
belongs to (`owner`), and cancel what a rollout still has in flight.

The request models validate every field a harness sends, with bounds (a seed
is a non-negative 63-bit integer, a message's role and content are strings,
lists are bounded), so that one malformed request fails at the door, alone,
rather than inside a batch it shares with other rollouts.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sia.errors import PolicyError
from sia.policy.batcher import Batcher, Cancelled
from sia.policy.local import GenRequest, LocalPolicy

SEED = Field(None, ge=0, le=2**63 - 1)
STOP = Field(None, max_length=16)
MAX_TOKENS = 1 << 20
CANCELLED = 499
"""The status of a request cancelled because its rollout ended (nginx's "client closed request")."""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    model: str
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=1024)
    temperature: float = Field(1.0, ge=0, le=5)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS)
    n: int = Field(1, ge=1, le=64)
    stop: str | list[str] | None = STOP
    seed: int | None = SEED
    logprobs: bool = False

    @field_validator("messages")
    @classmethod
    def _messages(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, m in enumerate(messages):
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f"message {i} needs a string 'role' and a string 'content'")
        return messages


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    model: str
    prompt: str | Annotated[list[str], Field(max_length=1024)]
    temperature: float = Field(1.0, ge=0, le=5)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(16, ge=0, le=MAX_TOKENS)
    n: int = Field(1, ge=1, le=64)
    stop: str | list[str] | None = STOP
    seed: int | None = SEED
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    model: str
    input: str | Annotated[list[str], Field(min_length=1, max_length=8192)]
    encoding_format: str = "float"


def within_tokens(req: BaseModel, left: int) -> None:
    """Cut a generation request so that its `n` completions together stay within `left` tokens."""
    n = int(getattr(req, "n", 1) or 1)
    most = max(1, left // n)
    if isinstance(req, ChatRequest):
        if req.max_completion_tokens is not None:
            req.max_completion_tokens = min(req.max_completion_tokens, most)
        else:
            req.max_tokens = most if req.max_tokens is None else min(req.max_tokens, most)
    elif isinstance(req, CompletionRequest) and req.max_tokens > 0:
        req.max_tokens = min(req.max_tokens, most)


def _stops(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


class HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


SCORED_KEPT = 256
"""Scoring requests the local backend keeps (see `LocalBackend._score`)."""


class LocalBackend:
    """The in-process model behind a batcher."""

    def __init__(self, policy: LocalPolicy, max_batch: int = 32, window_s: float = 0.005) -> None:
        self.policy = policy
        self.batcher = Batcher(self._run_group, max_batch=max_batch, window_s=window_s, open_session=policy.session)
        self._embedded: OrderedDict[tuple[str, str], list[float]] = OrderedDict()  # (model, text) -> vector, see `embeddings`
        self._computing: dict[tuple[str, str], asyncio.Future] = {}
        self._scored: OrderedDict[tuple[str, tuple[str, ...]], list[list[float]]] = OrderedDict()  # see `_score`
        self._scoring: dict[tuple[str, tuple[str, ...]], asyncio.Future] = {}

    def model_names(self) -> list[str]:
        return self.policy.model_names()

    def _run_group(self, kind: str, model: str, items: list[Any]) -> list[Any]:
        if kind == "generate":
            return self.policy.generate(items, model)
        if kind == "embed":
            return self.policy.embed(items, model)
        return self.policy.score(items, model)

    def _check_model(self, model: str) -> str:
        if model not in self.model_names():
            raise HTTPError(404, f"model {model!r} not found; available: {self.model_names()}", "model_not_found")
        return model

    async def _submit(self, kind: str, model: str, items: list[Any], owner: str = "") -> list[Any]:
        try:
            return await asyncio.wrap_future(self.batcher.submit(kind, model, items, owner))
        except Cancelled as e:
            raise HTTPError(CANCELLED, str(e), "cancelled") from None

    def cancel(self, owner: str) -> None:
        """Cancel every request of rollout `owner` still queued or decoding."""
        self.batcher.cancel(owner)

    def _budget(self, prompt_ids: list[int], max_tokens: int | None) -> int:
        room = self.policy.config.max_context - len(prompt_ids)
        if room <= 0:
            raise HTTPError(
                400, f"prompt has {len(prompt_ids)} tokens; the context holds {self.policy.config.max_context}", "context_length_exceeded"
            )
        return min(max_tokens if max_tokens is not None else room, room)

    async def chat(self, req: ChatRequest, owner: str = "") -> tuple[dict, dict]:
        model = self._check_model(req.model)
        prompt = self.policy.render_chat(req.messages)
        prompt_ids = self.policy.encode(prompt)
        max_tokens = self._budget(prompt_ids, req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens)
        items = [
            GenRequest(prompt_ids, max_tokens, req.temperature, req.top_p, _stops(req.stop), None if req.seed is None else req.seed + i)
            for i in range(req.n)
        ]
        results = await self._submit("generate", model, items, owner)
        choices = []
        for i, r in enumerate(results):
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": r.text},
                "finish_reason": r.finish_reason,
                "token_ids": r.token_ids,
            }
            if req.logprobs:
                toks = self.policy.token_strings(r.token_ids)
                choice["logprobs"] = {
                    "content": [
                        {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []} for t, lp in zip(toks, r.logprobs)
                    ]
                }
            choices.append(choice)
        n_out = sum(len(r.token_ids) for r in results)
        resp = {
            "id": f"chatcmpl-{secrets.token_hex(8)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "prompt_token_ids": prompt_ids,
            "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": n_out, "total_tokens": len(prompt_ids) + n_out},
        }
        record = {
            "kind": "chat",
            "model": model,
            "messages": req.messages,
            "prompt": prompt,
            "prompt_token_ids": prompt_ids,
            "params": _params(req),
            "completions": [_completion_record(r) for r in results],
        }
        return resp, record

    async def completions(self, req: CompletionRequest, owner: str = "") -> tuple[dict, dict]:
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
            scored, computed = await self._score(model, tuple(prompts), encoded, owner)
            for i, (p, ids, lps) in enumerate(zip(prompts, encoded, scored)):
                toks = self.policy.token_strings(ids)
                offsets, pos = [], 0
                for t in toks:
                    offsets.append(pos)
                    pos += len(t)
                choices.append(
                    {
                        "index": i,
                        "text": p,
                        "finish_reason": "length",
                        "token_ids": ids,
                        "logprobs": {"tokens": toks, "token_logprobs": lps, "text_offset": offsets, "top_logprobs": None},
                    }
                )
                records.append({"prompt": p, "prompt_token_ids": ids, "prompt_logprobs": lps})
            n_in = sum(len(x) for x in encoded)
            resp = {
                "id": f"cmpl-{secrets.token_hex(8)}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": choices,
                "usage": {"prompt_tokens": n_in, "completion_tokens": 0, "total_tokens": n_in},
            }
            return resp, {"kind": "score", "model": model, "params": _params(req), "prompts": records, "computed": computed}
        items = []
        for ids in encoded:
            if not ids:
                raise HTTPError(400, "a prompt is empty; generation needs at least one token")
            mt = self._budget(ids, req.max_tokens)
            items += [
                GenRequest(ids, mt, req.temperature, req.top_p, _stops(req.stop), None if req.seed is None else req.seed + k)
                for k in range(req.n)
            ]
        results = await self._submit("generate", model, items, owner)
        for i, r in enumerate(results):
            p = prompts[i // req.n]
            choice = {"index": i, "text": (p if req.echo else "") + r.text, "finish_reason": r.finish_reason, "token_ids": r.token_ids}
            if req.logprobs is not None:
                choice["logprobs"] = {
                    "tokens": self.policy.token_strings(r.token_ids),
                    "token_logprobs": r.logprobs,
                    "text_offset": None,
                    "top_logprobs": None,
                }
            choices.append(choice)
        n_in = sum(len(x) for x in encoded) * req.n
        n_out = sum(len(r.token_ids) for r in results)
        resp = {
            "id": f"cmpl-{secrets.token_hex(8)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
        }
        record = {
            "kind": "completion",
            "model": model,
            "params": _params(req),
            "prompts": [{"prompt": p, "prompt_token_ids": ids} for p, ids in zip(prompts, encoded)],
            "completions": [_completion_record(r) for r in results],
        }
        return resp, record

    async def _score(
        self, model: str, prompts: tuple[str, ...], encoded: list[list[int]], owner: str = ""
    ) -> tuple[list[list[float]], bool]:
        """Per-token logprobs of `prompts` under `model`, and whether this call computed them.

        A calibrating harness scores the same content-free prompts for every example, often from several rollouts at
        once, so results are kept per (model, prompts), the most recent `SCORED_KEPT` requests, and a request already
        being computed is waited for. Content-free prompts are asked for by every example, so they stay among the most
        recent; each example's own prompts pass through (a LawBench request holds ~100 KB of logprobs). Scoring is
        deterministic and an adapter's name is never reused for other weights, so a kept result is the one a new
        computation would give."""
        key = (model, prompts)
        if key not in self._scored and key in self._scoring:
            await asyncio.shield(self._scoring[key])
        if key in self._scored:
            self._scored.move_to_end(key)
            return self._scored[key], False
        done = asyncio.get_running_loop().create_future()
        self._scoring[key] = done
        try:
            scored = (await self._submit("score", model, [encoded], owner))[0]
            self._scored[key] = scored
            while len(self._scored) > SCORED_KEPT:
                self._scored.popitem(last=False)
            return scored, True
        finally:
            self._scoring.pop(key, None)
            done.set_result(None)  # waiters find the result, or compute it themselves when this call failed

    async def embeddings(self, req: EmbeddingRequest, owner: str = "") -> tuple[dict, dict]:
        """OpenAI embeddings: each input's mean final hidden state under `model`.

        A harness embeds the same pool of demonstrations for every example, often from several rollouts at once, so
        vectors are kept per (model, text), the most recent 8192, and a text already being computed is waited for, not
        computed again."""
        model = self._check_model(req.model)
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not all(isinstance(t, str) and t for t in texts):
            raise HTTPError(400, "every input to embed must be a non-empty string")
        keys = list(dict.fromkeys((model, t) for t in texts))
        waits = {self._computing[k] for k in keys if k in self._computing and k not in self._embedded}
        todo = [k for k in keys if k not in self._embedded and k not in self._computing]
        n_in = await self._embed(model, todo, owner) if todo else 0
        if waits:
            await asyncio.gather(*waits)
        if missing := [k for k in keys if k not in self._embedded]:  # evicted meanwhile, or computed by a failed call
            n_in += await self._embed(model, missing, owner)
        data = [{"object": "embedding", "index": i, "embedding": self._embedded[(model, t)]} for i, t in enumerate(texts)]
        resp = {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": n_in, "total_tokens": n_in}}
        return resp, {"kind": "embed", "model": model, "inputs": len(texts), "computed": len(todo), "prompt_tokens": n_in}

    async def _embed(self, model: str, keys: list[tuple[str, str]], owner: str = "") -> int:
        """Compute and keep the vectors of `keys`; tokens read."""
        done = asyncio.get_running_loop().create_future()
        self._computing.update({k: done for k in keys})
        try:
            encoded = [self.policy.encode(t)[: self.policy.config.max_context] for _, t in keys]
            vectors = await self._submit("embed", model, encoded, owner)
            for k, v in zip(keys, vectors):
                self._embedded[k] = v
                self._embedded.move_to_end(k)
            while len(self._embedded) > 8192:
                self._embedded.popitem(last=False)
            return sum(len(x) for x in encoded)
        finally:
            for k in keys:
                self._computing.pop(k, None)
            done.set_result(None)  # waiters look for their vectors, and compute the ones this call did not make

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return self.policy.render_chat(messages)

    async def load_adapter(self, name: str, path: str) -> list[str]:
        try:
            await asyncio.to_thread(self.policy.load_adapter, name, path)
        except PolicyError as e:
            raise HTTPError(400, str(e)) from None
        return self.model_names()

    def stats(self) -> dict[str, int]:
        return {"forward_passes": self.policy.forward_passes, "batches": self.batcher.batches, "jobs": self.batcher.jobs}

    def close(self) -> None:
        self.batcher.close()
        if hasattr(self.policy, "close"):
            self.policy.close()


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
        self._tasks: dict[str, set[asyncio.Task]] = {}  # touched on the service's event loop only
        self._loop: asyncio.AbstractEventLoop | None = None

    def model_names(self) -> list[str]:
        return [self.model, "base"]

    def cancel(self, owner: str) -> None:
        """Cancel the upstream requests rollout `owner` still waits on (from any thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: [t.cancel() for t in self._tasks.get(owner, ())])

    async def _forward(self, path: str, body: dict, owner: str = "") -> dict:
        body = {**body, "model": self.model}
        self._loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(self.client.post(path, json=body))
        self._tasks.setdefault(owner, set()).add(task)
        try:
            r = await task
        except httpx.HTTPError as e:
            raise HTTPError(502, f"upstream {self.base_url} unreachable: {e}", "upstream_error") from None
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            raise HTTPError(CANCELLED, "cancelled: the rollout ended", "cancelled") from None
        finally:
            self._tasks[owner].discard(task)
            if not self._tasks[owner]:
                del self._tasks[owner]
        if r.status_code >= 400:
            raise HTTPError(r.status_code, f"upstream error: {r.text[:500]}", "upstream_error")
        self.calls += 1
        return r.json()

    async def chat(self, req: ChatRequest, owner: str = "") -> tuple[dict, dict]:
        resp = await self._forward("/chat/completions", req.model_dump(exclude_none=True), owner)
        comps = []
        for ch in resp.get("choices", []):
            content = (ch.get("logprobs") or {}).get("content") or []
            comps.append(
                {
                    "text": (ch.get("message") or {}).get("content") or "",
                    "token_ids": ch.get("token_ids"),
                    "logprobs": [c.get("logprob") for c in content] or None,
                    "finish_reason": ch.get("finish_reason"),
                }
            )
        record = {
            "kind": "chat",
            "model": self.model,
            "messages": req.messages,
            "prompt_token_ids": resp.get("prompt_token_ids"),
            "params": _params(req),
            "completions": comps,
            "usage": resp.get("usage"),
        }
        return resp, record

    async def completions(self, req: CompletionRequest, owner: str = "") -> tuple[dict, dict]:
        resp = await self._forward("/completions", req.model_dump(exclude_none=True), owner)
        comps = [
            {
                "text": ch.get("text", ""),
                "token_ids": ch.get("token_ids"),
                "logprobs": (ch.get("logprobs") or {}).get("token_logprobs"),
                "finish_reason": ch.get("finish_reason"),
            }
            for ch in resp.get("choices", [])
        ]
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        kind = "score" if req.max_tokens == 0 else "completion"
        record = {
            "kind": kind,
            "model": self.model,
            "params": _params(req),
            "prompts": [{"prompt": p} for p in prompts],
            "completions": comps,
            "usage": resp.get("usage"),
        }
        return resp, record

    async def embeddings(self, req: EmbeddingRequest, owner: str = "") -> tuple[dict, dict]:
        resp = await self._forward("/embeddings", req.model_dump(exclude_none=True), owner)
        n = len(resp.get("data") or [])
        return resp, {"kind": "embed", "model": self.model, "inputs": n, "usage": resp.get("usage")}

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        raise HTTPError(501, "render_chat is only available for the local policy", "not_supported")

    async def load_adapter(self, name: str, path: str) -> list[str]:
        raise HTTPError(501, "adapters are only served by the local policy; a remote endpoint serves its own", "not_supported")

    def stats(self) -> dict[str, int]:
        return {"upstream_calls": self.calls}

    def close(self) -> None:
        pass
