"""The models behind the Meta- and Feedback-Agents: OpenAI-compatible endpoints and Anthropic, recorded and replayable.

One spelling names a model everywhere (`--feedback-model`, `--meta-model`,
`--task-model`): `anthropic:claude-sonnet-4-6`, `openai:gpt-4.1`, or
`openai:MODEL@http://host:port/v1` for any OpenAI-compatible server (vLLM,
llama.cpp, Ollama, sia's own policy service).

Requests go through the official `openai` and `anthropic` SDKs, which retry
rate limits (429), overload and timeouts with exponential backoff, honouring
`retry-after`. Below the SDK sits `CallTransport`, an HTTP transport that
records every exchange (request body, status, the headers that matter,
response body, token usage, cost) in the run store's `agent_calls` table, API
keys excluded. Recording at the HTTP layer rather than the SDK object layer is
on purpose: a replay feeds the SDK the exact bytes it once received, so
retries, errors and response parsing run as they did. With `--replay RUN_DIR`
(or a JSONL file of exchanges) the transport answers from the recording, in
order per role, and never opens a connection.

The token and money budget counts every exchange in the store, across resumes.
A call that would start past the budget raises `AgentBudgetSpent`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from sia.agents.config import (  # noqa: F401
    ANTHROPIC_OPENAI_URL,
    DEFAULT_PRICES,
    KEY_VARS,
    AgentModelError,
    ModelSpec,
    api_key,
    parse_model_spec,
    parse_prices,
    price_of,
)

KEPT_HEADERS = ("content-type", "retry-after", "retry-after-ms", "x-should-retry", "request-id", "x-request-id")


class AgentBudgetSpent(AgentModelError):
    """The run's token or money budget for agent calls is spent."""


class ReplayExhausted(AgentModelError):
    """A replayed run asked for more agent calls than the recording holds."""


@dataclass
class AgentBudget:
    usd: float | None = None
    tokens: int | None = None

    def check(self, store) -> None:
        tokens, usd = store.agent_usage()
        if self.tokens is not None and tokens >= self.tokens:
            raise AgentBudgetSpent(f"agent token budget spent ({tokens} of {self.tokens} tokens)",
                                   "`sia resume RUN_DIR --agent-budget-tokens N` with a larger N continues the run")
        if self.usd is not None and usd >= self.usd:
            raise AgentBudgetSpent(f"agent money budget spent (${usd:.4f} of ${self.usd:.2f})",
                                   "`sia resume RUN_DIR --agent-budget-usd X` with a larger X continues the run")


def usage_of(provider: str, body: dict[str, Any]) -> tuple[int, int]:
    u = body.get("usage") or {}
    if provider == "anthropic":
        return (int(u.get("input_tokens") or 0) + int(u.get("cache_creation_input_tokens") or 0)
                + int(u.get("cache_read_input_tokens") or 0), int(u.get("output_tokens") or 0))
    return int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)


class Recording:
    """Recorded exchanges to replay, per role in order: a run directory's store or a JSONL file."""

    def __init__(self, exchanges: list[dict[str, Any]]) -> None:
        self._by_role: dict[str, list[dict[str, Any]]] = {}
        for x in exchanges:
            self._by_role.setdefault(x["role"], []).append(x)
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        path = Path(path)
        if path.is_dir():
            from sia.store.store import Store

            if not (path / "sia.db").exists():
                raise AgentModelError(f"{path} is not a sia run directory", "pass --replay RUN_DIR of an earlier run, or a .jsonl file")
            with Store(path, write=False) as store:
                return cls([asdict(r) for r in store.agent_calls()])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            rows = [json.loads(line) for line in lines if line.strip()]
        except (OSError, ValueError) as e:
            raise AgentModelError(f"cannot read recording {path}: {e}", "pass a run directory or a JSONL file of exchanges") from None
        for r in rows:
            if isinstance(r.get("response"), (dict, list)):
                r["response"] = json.dumps(r["response"])
        return cls(rows)

    def skip(self, role: str, n: int) -> None:
        """Mark the first `n` exchanges of `role` as used (a resumed replay continues after what it already replayed)."""
        self._used[role] = self._used.get(role, 0) + n

    def next(self, role: str) -> dict[str, Any]:
        with self._lock:
            i = self._used.get(role, 0)
            items = self._by_role.get(role, [])
            if i >= len(items):
                raise ReplayExhausted(f"the recording has no more {role} calls ({len(items)} replayed)",
                                      "the replayed run asked for more than the recorded one did")
            self._used[role] = i + 1
            return items[i]


class CallTransport(httpx2.BaseTransport):
    """Records every exchange in the store; answers from a `Recording` when replaying."""

    def __init__(self, store, role: str, spec: ModelSpec, prices: dict[str, tuple[float, float]],
                 recording: Recording | None = None) -> None:
        self.store, self.role, self.spec, self.prices, self.recording = store, role, spec, prices, recording
        self._inner = None if recording else httpx2.HTTPTransport()
        self.exhausted: ReplayExhausted | None = None

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read().decode("utf-8", "replace")
        if self.recording is not None:
            try:
                x = self.recording.next(self.role)
            except ReplayExhausted as e:  # answered without retries; AgentModel.chat raises it
                self.exhausted = e
                return httpx2.Response(400, headers={"x-should-retry": "false", "content-type": "application/json"},
                                       content=json.dumps({"error": {"message": e.message, "type": "replay_exhausted"}}).encode(),
                                       request=request)
            status, headers, content = int(x["status"]), dict(x.get("headers") or {}), x["response"]
            if "retry-after" in headers or "retry-after-ms" in headers or status == 429:
                headers.pop("retry-after", None)
                headers["retry-after-ms"] = "1"  # a replay repeats the retry without waiting for it
        else:
            try:
                resp = self._inner.handle_request(request)
                raw = resp.read()
            except httpx2.TransportError as e:
                self.store.add_agent_call(self.role, self.spec.provider, self.spec.model, str(request.url), body, 0, {},
                                          f"{type(e).__name__}: {e}")
                raise
            status, content = resp.status_code, raw.decode("utf-8", "replace")
            headers = {k: resp.headers[k] for k in KEPT_HEADERS if k in resp.headers}
        if status == 0:  # a recorded transport failure
            self._add(request, body, status, headers, content)
            kind = content.split(":", 1)[0]
            exc = getattr(httpx2, kind, httpx2.ConnectError)
            kind = exc if isinstance(exc, type) and issubclass(exc, httpx2.TransportError) else httpx2.ConnectError
            raise kind(content, request=request)
        self._add(request, body, status, headers, content)
        return httpx2.Response(status, headers=headers, content=content.encode("utf-8"), request=request)

    def _add(self, request, body: str, status: int, headers: dict[str, str], content: str) -> None:
        tin = tout = 0
        if 200 <= status < 300:
            try:
                tin, tout = usage_of(self.spec.provider, json.loads(content))
            except (ValueError, AttributeError):
                pass
        price = price_of(self.spec, self.prices) or (0.0, 0.0)
        cost = (tin * price[0] + tout * price[1]) / 1e6
        self.store.add_agent_call(
            self.role,
            self.spec.provider,
            self.spec.model,
            str(request.url),
            body,
            status,
            headers,
            content,
            tin,
            tout,
            cost,
            replayed=self.recording is not None,
        )

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


@dataclass
class AgentModelConfig:
    max_tokens: int = 4096
    """Longest reply asked of the agent model."""
    temperature: float = 0.0
    """Sampling temperature on OpenAI-compatible endpoints."""
    max_retries: int = 4
    """SDK retries (with exponential backoff) on rate limits, overload and timeouts."""
    timeout_s: float = 300.0
    budget: AgentBudget = field(default_factory=AgentBudget)
    prices: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))


class AgentModel:
    """`chat(system, messages) -> text` on one configured model; every exchange lands in the run store."""

    def __init__(
        self, spec: ModelSpec, role: str, store, config: AgentModelConfig | None = None, recording: Recording | None = None
    ) -> None:
        self.spec, self.role, self.store = spec, role, store
        self.config = config or AgentModelConfig()
        if self.config.budget.usd is not None and price_of(spec, self.config.prices) is None:
            raise AgentModelError(
                f"no price is known for {spec.model}, so a money budget cannot be kept",
                f"pass --price {spec.model}=IN,OUT (USD per million tokens)",
            )
        key = "replay" if recording is not None else api_key(spec)
        self._transport = CallTransport(store, role, spec, self.config.prices, recording)
        self._http = httpx2.Client(transport=self._transport, timeout=self.config.timeout_s)
        common = {"api_key": key, "max_retries": self.config.max_retries, "timeout": self.config.timeout_s, "http_client": self._http}
        if spec.provider == "anthropic":
            import anthropic

            self._errors = (anthropic.APIError,)
            self._client: Any = anthropic.Anthropic(base_url=spec.base_url, **common)
        else:
            import openai

            self._errors = (openai.APIError,)
            self._client = openai.OpenAI(base_url=spec.base_url, **common)

    def chat(self, system: str, messages: list[dict[str, str]], max_tokens: int | None = None) -> str:
        """The model's text reply. Raises AgentModelError once the SDK's retries are spent."""
        self.config.budget.check(self.store)
        max_tokens = max_tokens or self.config.max_tokens
        try:
            if self.spec.provider == "anthropic":
                # this SDK's Messages API takes no sampling temperature: the model's default applies
                msg = self._client.messages.create(model=self.spec.model, system=system, messages=messages, max_tokens=max_tokens)
                return "".join(b.text for b in msg.content if getattr(b, "type", "") == "text")
            resp = self._client.chat.completions.create(
                model=self.spec.model,
                messages=[{"role": "system", "content": system}, *messages],
                max_tokens=max_tokens,
                temperature=self.config.temperature,
            )
            if not resp.choices:
                raise AgentModelError(f"{self.spec.spelling} answered with no choices", "check the endpoint")
            return resp.choices[0].message.content or ""
        except self._errors as e:
            if self._transport.exhausted is not None:
                raise self._transport.exhausted from None
            status = getattr(e, "status_code", None)
            if status in (401, 403):
                var = KEY_VARS[self.spec.provider]
                raise AgentModelError(
                    f"{self.spec.spelling} refused the API key (HTTP {status})", f"set {var} to a key this endpoint accepts"
                ) from None
            retried = "" if status is not None and status < 500 and status != 429 else f" after {self.config.max_retries} retries"
            raise AgentModelError(
                f"{self.spec.spelling} failed{retried}: {type(e).__name__}: {str(e)[:300]}",
                "check the endpoint, the model name and the rate limits",
            ) from None

    def close(self) -> None:
        self._http.close()
