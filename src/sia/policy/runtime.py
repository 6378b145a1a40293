"""A running policy service for the duration of a command: local model or remote endpoint.

`PolicyRuntime.local()` loads the model (the embedded default unless told
otherwise) and serves it; `PolicyRuntime.remote(url, model)` serves a recording
proxy to an external OpenAI-compatible endpoint, after checking it answers.
"""

from __future__ import annotations

from typing import Any

import httpx

from sia.errors import PolicyError
from sia.policy.service import LocalBackend, PolicyService, RemoteBackend


class PolicyRuntime:
    def __init__(self, service: PolicyService) -> None:
        self.service = service
        self.engine, self.note = "remote", ""
        self.proofs: dict[str, dict[str, Any]] = {}
        """Each served adapter's canary result (`load_adapter`)."""

    @classmethod
    def local(cls, model: str | None = None, max_batch: int = 32, backend: str = "auto") -> PolicyRuntime:
        """The local model served by the engine `backend` names (auto: the faster one measured at setup)."""
        from sia.policy.choice import choose

        engine, note = choose(backend, model)
        if engine == "llamacpp":
            from sia.policy.llama import LlamaPolicy, LlamaPolicyConfig

            policy = LlamaPolicy(LlamaPolicyConfig(model=model))
            max_batch = policy.config.n_seq - 2
        else:
            from sia.policy.local import LocalPolicy, LocalPolicyConfig

            policy = LocalPolicy(LocalPolicyConfig(model=model))
        service = PolicyService(LocalBackend(policy, max_batch=max_batch))
        service.start()
        runtime = cls(service)
        runtime.engine, runtime.note = engine, note
        return runtime

    @classmethod
    def remote(cls, base_url: str, model: str, api_key: str | None = None) -> PolicyRuntime:
        check_endpoint(base_url, api_key)
        service = PolicyService(RemoteBackend(base_url, model, api_key))
        service.start()
        return cls(service)

    def local_policy(self):
        """The in-process model (for adapters and training), or a clear error when the policy is remote."""
        if not isinstance(self.service.backend, LocalBackend):
            raise PolicyError("adapters and the weights lever need the local policy, not a remote endpoint",
                              "drop --endpoint, or use --levers harness")
        return self.service.backend.policy

    def load_adapter(self, name: str, path) -> dict[str, Any]:
        """Serve the adapter folder `path` as model `name` next to the base (local policy only), and prove it: the name
        must be listed, and its effect on the canary's logprobs as served (under `name`, less the base) must match a
        local PEFT forward pass of `path` within `CANARY_TOLERANCE`; otherwise the adapter is unloaded and a PolicyError
        says why (fail closed). Calls answered under `name` are then recorded with the adapter's content hash. Returns
        the proof."""
        from pathlib import Path

        from sia.policy.adapters import adapter_sha256

        policy = self.local_policy()
        policy.load_adapter(name, path)
        try:
            if not self.has_model(name):
                raise PolicyError(f"adapter {name!r} was loaded but the policy service does not list it",
                                  "report this: the engine lost the adapter")
            proof = self.prove_adapter(name, Path(path))
        except BaseException:
            policy.unload_adapter(name)
            raise
        self.service.adapter_hashes[name] = proof["sha256"] = adapter_sha256(Path(path))
        self.proofs[name] = proof
        return proof

    def prove_adapter(self, name: str, path) -> dict[str, Any]:
        """The canary check of `load_adapter`: served logprobs under `name` against the adapter's own (`sia.policy.adapters`)."""
        from sia.policy.adapters import CANARY_MIN_EFFECT, CANARY_RELATIVE, CANARY_TOLERANCE, canary_check, read_canary, reference_logprobs

        policy = self.local_policy()
        seqs = read_canary(path, policy.encode)
        groups = [[ids] for ids, _ in seqs]
        served, served_base = ([g[0][start:] for g, (_, start) in zip(policy.score(groups, model=model), seqs)]
                               for model in (name, None))
        ok, error, effect = canary_check(served, served_base, *reference_logprobs(policy.model_path, path, seqs))
        if ok is False:
            raise PolicyError(f"the policy serves something else under {name!r}: the adapter's effect on its canary differs "
                              f"from adapter {path}'s own by {error:.3f} nats a token (its effect is {effect:.3f}; tolerance "
                              f"{CANARY_TOLERANCE}, or {CANARY_RELATIVE:.0%} of the effect)",
                              "the engine was handed another adapter file; the adapter is not served")
        return {"canaries": len(seqs), "proven": ok is True, "error": round(error, 4), "effect": round(effect, 4),
                "tolerance": max(CANARY_TOLERANCE, CANARY_RELATIVE * effect),
                "note": "" if ok else f"unproven: the adapter moves its canary by {effect:.3f} nats a token, below the "
                                      f"{CANARY_MIN_EFFECT} an engine's noise allows to check"}

    def has_model(self, name: str) -> bool:
        return name in self.service.backend.model_names()

    def model_name(self, adapter: str | None = None) -> str:
        return adapter or self.service.backend.model_names()[0]

    def stats(self) -> dict[str, Any]:
        return {**self.service.backend.stats(), "requests": self.service.requests}

    def close(self) -> None:
        self.service.stop()

    def __enter__(self) -> PolicyRuntime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_endpoint(base_url: str, api_key: str | None = None, timeout_s: float = 10.0) -> None:
    """Fail early, in one line, when an external endpoint cannot be reached."""
    if not base_url.startswith(("http://", "https://")):
        raise PolicyError(f"endpoint URL {base_url!r} must start with http:// or https://", "e.g. http://localhost:8000/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=timeout_s)
    except httpx.HTTPError as e:
        raise PolicyError(
            f"cannot reach endpoint {base_url} ({type(e).__name__})", "check the URL and that the server is running"
        ) from None
    if r.status_code in (401, 403):
        raise PolicyError(f"endpoint {base_url} refused the API key (HTTP {r.status_code})", "set SIA_API_KEY (or OPENAI_API_KEY)")
