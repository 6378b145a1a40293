"""`ctx.llm`: a small OpenAI-protocol client for harness code.

It speaks the public chat-completions and completions API, so the same code
works against sia's policy service and against any OpenAI-compatible endpoint
(vLLM, llama.cpp server, hosted APIs). It is built on the standard library's
`http.client` rather than the `openai` SDK or httpx because it is imported by
every sandboxed rollout process: on a 2-core CPU machine `import openai` costs
about 0.86 s of CPU and httpx about 0.15 s, against a few ms here, and the
rollout processes share those cores with the model.

`logprobs(prompt, continuations)` uses the completions API with `echo=true`,
`max_tokens=0` and `logprobs`, which vLLM and sia's service implement.

Inside sia's sandbox the client reaches the policy through a Unix socket (the
rollout's door, `unix_socket=`), with the door's token as its key: there is no
network in the sandbox.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


class LLMError(RuntimeError):
    """The model endpoint failed or answered something unusable.

    `refused` is set when the endpoint turned the request down as malformed (an HTTP 4xx other than
    authentication and rate limits: a prompt longer than the context, a bad parameter): that is the
    harness's doing, not the machine's."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.refused = 400 <= status < 500 and status not in (401, 403, 408, 429)


@dataclass
class Reply:
    text: str
    texts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def __str__(self) -> str:
        return self.text


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (the sandbox's door to the policy)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("sia", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class LLMClient:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0, retries: int = 2,
                 default_seed: int | None = None, unix_socket: str | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._unix = unix_socket
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LLMError(f"endpoint URL {base_url!r} must look like http://host:port/v1")
        self._scheme, self._host, self._port, self._prefix = parts.scheme, parts.hostname, parts.port, parts.path
        self._headers = headers
        self._timeout = timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self.model = model
        self.retries = retries
        self.default_seed = default_seed
        self.calls = 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._unix:
                self._conn = _UnixConnection(self._unix, self._timeout)
            else:
                cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
                self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def _send(self, path: str, payload: bytes) -> tuple[int, bytes]:
        conn = self._connection()
        try:
            conn.request("POST", self._prefix + path, body=payload, headers=self._headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            self.close()  # a dropped keep-alive connection is reopened on the next try
            raise

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body).encode()
        delay = 0.5
        status, raw = 0, b""
        for attempt in range(self.retries + 1):
            try:
                status, raw = self._send(path, payload)
            except (TimeoutError, OSError, http.client.HTTPException) as e:
                if attempt == self.retries:
                    raise LLMError(f"cannot reach {self.base_url}: {type(e).__name__}: {e}") from None
            else:
                if status < 500 and status != 429 or attempt == self.retries:
                    break
            time.sleep(delay)
            delay *= 2
        self.calls += 1
        try:
            data = json.loads(raw)
        except ValueError:
            raise LLMError(f"{path}: HTTP {status}, not JSON: {raw[:200]!r}") from None
        if status >= 400:
            err = data.get("error") if isinstance(data, dict) else None
            msg = err.get("message") if isinstance(err, dict) else str(data)[:200]
            raise LLMError(f"{path}: HTTP {status}: {msg}", status)
        return data

    def _sampling(self, temperature, max_tokens, top_p, stop, n, seed) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "n": n}
        if stop:
            body["stop"] = stop
        seed = seed if seed is not None else self.default_seed
        if seed is not None:
            body["seed"] = seed
        return body

    def chat(self, messages: list[dict[str, str]] | str, *, temperature: float = 0.0, max_tokens: int = 256,
             top_p: float = 1.0, stop: list[str] | str | None = None, n: int = 1, seed: int | None = None) -> Reply:
        """One chat completion; `messages` may be a plain string for a single user turn."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        data = self._post("/chat/completions", {**self._sampling(temperature, max_tokens, top_p, stop, n, seed), "messages": messages})
        try:
            texts = [c["message"]["content"] or "" for c in data["choices"]]
            finish = data["choices"][0].get("finish_reason")
        except (KeyError, IndexError, TypeError):
            raise LLMError(f"malformed chat response: {str(data)[:200]}") from None
        return Reply(texts[0], texts, finish, data)

    def complete(self, prompt: str, *, temperature: float = 0.0, max_tokens: int = 256, top_p: float = 1.0,
                 stop: list[str] | str | None = None, n: int = 1, seed: int | None = None) -> Reply:
        data = self._post("/completions", {**self._sampling(temperature, max_tokens, top_p, stop, n, seed), "prompt": prompt})
        try:
            texts = [c["text"] for c in data["choices"]]
            finish = data["choices"][0].get("finish_reason")
        except (KeyError, IndexError, TypeError):
            raise LLMError(f"malformed completion response: {str(data)[:200]}") from None
        return Reply(texts[0], texts, finish, data)

    def logprobs(self, prompt: str, continuations: list[str]) -> list[float]:
        """Total log-probability of each continuation after `prompt` (for scoring labels)."""
        body = {"model": self.model, "prompt": [prompt + c for c in continuations], "max_tokens": 0, "echo": True, "logprobs": 0,
                "temperature": 0.0}
        data = self._post("/completions", body)
        out = []
        try:
            for choice in sorted(data["choices"], key=lambda c: c["index"]):
                lp = choice["logprobs"]
                total = 0.0
                for off, val in zip(lp["text_offset"], lp["token_logprobs"]):
                    if off >= len(prompt) and val is not None:
                        total += val
                out.append(total)
        except (KeyError, TypeError):
            raise LLMError(f"endpoint did not return prompt logprobs: {str(data)[:200]}") from None
        if len(out) != len(continuations):
            raise LLMError(f"asked to score {len(continuations)} continuations, got {len(out)}")
        return out

    def embed(self, texts: list[str]) -> list[list[float]]:
        """The policy model's embedding of each text (sia's service: the mean final hidden state)."""
        data = self._post("/embeddings", {"model": self.model, "input": list(texts)})
        try:
            rows = sorted(data["data"], key=lambda d: d["index"])
            out = [[float(x) for x in d["embedding"]] for d in rows]
        except (KeyError, TypeError, ValueError):
            raise LLMError(f"malformed embeddings response: {str(data)[:200]}") from None
        if len(out) != len(texts):
            raise LLMError(f"asked to embed {len(texts)} texts, got {len(out)}")
        return out

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The model's chat prompt for `messages`, ending where the assistant's reply starts."""
        try:
            return self._post("/sia/render_chat", {"messages": messages})["prompt"]
        except (LLMError, KeyError):
            # Endpoints other than sia's: fall back to ChatML, which SmolLM2, Qwen and many others use.
            parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
            return "".join(parts) + "<|im_start|>assistant\n"
