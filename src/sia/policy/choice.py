"""Which engine serves the local policy: measured once at setup, recorded, overridable.

`sia setup` generates the same 32 tokens greedily on each engine that can run
here (HF/PyTorch fp32, and llama.cpp on the GGUF when llama-cpp-python is
installed) and records tokens/s in `SIA_HOME/backend.json`. "auto" then means
the faster of the two; `--policy-backend hf|llamacpp` overrides it. When
llama.cpp cannot be imported (it did not build on this machine), "auto" is HF
and sia says why in one line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from sia.errors import PolicyError
from sia.paths import sia_home

BACKENDS = ("hf", "llamacpp")
PROMPT = "Write a short story about a lighthouse. Once upon a time,"


def record_path() -> Path:
    return sia_home() / "backend.json"


def llama_missing() -> str | None:
    """Why llama.cpp cannot serve here, or None."""
    try:
        import llama_cpp  # noqa: F401
    except Exception as e:  # ImportError, or a shared library that does not load
        return f"llama-cpp-python is not available ({type(e).__name__}: {str(e)[:120]})"
    return None


def _tok_s(policy, tokens: int = 32) -> float:
    from sia.policy.local import GenRequest

    ids = policy.encode(PROMPT)
    policy.generate([GenRequest(ids, 4)])  # warm up
    t0 = time.perf_counter()
    out = policy.generate([GenRequest(ids, tokens)])[0]
    return len(out.token_ids) / (time.perf_counter() - t0)


def probe() -> dict:
    """Measure each engine at batch 1 on the embedded model and record the faster as the default."""
    from sia.policy.local import LocalPolicy

    result: dict = {"measured": time.strftime("%Y-%m-%d %H:%M:%S"), "hf_tok_s": round(_tok_s(LocalPolicy()), 1)}
    missing = llama_missing()
    if missing:
        result.update(default="hf", llamacpp_tok_s=None, note=missing)
    else:
        from sia.policy.llama import LlamaPolicy, LlamaPolicyConfig

        policy = LlamaPolicy(LlamaPolicyConfig(n_ctx=3072, max_context=1024, n_seq=4))
        try:
            result["llamacpp_tok_s"] = round(_tok_s(policy), 1)
        finally:
            policy.close()
        result["default"] = "llamacpp" if result["llamacpp_tok_s"] > result["hf_tok_s"] else "hf"
    record_path().parent.mkdir(parents=True, exist_ok=True)
    record_path().write_text(json.dumps(result, indent=1))
    return result


def choose(requested: str = "auto", model: str | None = None) -> tuple[str, str]:
    """(engine, note): the engine to serve the local policy with, and a line to say when it is not what was asked."""
    if requested not in ("auto", *BACKENDS):
        raise PolicyError(f"unknown policy backend {requested!r}", "use auto, hf or llamacpp")
    gguf_model = model in (None, "", "embedded") or str(model).endswith(".gguf")
    missing = llama_missing()
    if requested == "llamacpp":
        if missing:
            raise PolicyError(f"--policy-backend llamacpp: {missing}", "run `make setup`, or use --policy-backend hf")
        if not gguf_model:
            raise PolicyError(f"llama.cpp serves GGUF models; {model} is an HF folder", "use --policy-backend hf")
        return "llamacpp", ""
    if requested == "hf":
        return "hf", ""
    if not gguf_model:
        return "hf", ""
    if missing:
        return "hf", f"serving with HF/PyTorch: {missing}"
    try:
        recorded = json.loads(record_path().read_text()).get("default", "hf")
    except (OSError, ValueError):
        recorded = "llamacpp"  # not measured yet: llama.cpp on a 4-bit GGUF is the faster on a CPU
    return recorded, ""
