"""What both engines of the local policy share: generation requests and results, the tokenizer methods, prefixes, threads.

Its own module, below `sia.policy.local` (HF), `sia.policy.llama` (llama.cpp),
their continuous-batching sessions and the engine choice, so that none of them
imports another for a shared type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def common_prefix(seqs: list[list[int]]) -> int:
    """Length of the prefix all of `seqs` share."""
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


@dataclass
class GenRequest:
    prompt_ids: list[int]
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class GenResult:
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str


class TokenizerMethods:
    """Prompts and names through the HF tokenizer of the served model: shared by both engines (`LlamaPolicy` too)."""

    tokenizer: Any
    name: str

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def token_strings(self, ids: list[int]) -> list[str]:
        return [self.tokenizer.decode([i]) for i in ids]

    def model_names(self) -> list[str]:
        return [self.name, "base", *getattr(self, "adapters", {})]


def cpu_threads() -> int:
    """Compute threads for the policy engine: the cores that other work leaves free, at least one.

    Threads of one matrix product wait for each other, so a thread that shares its core with another busy process
    slows all of them (measured: 13 s against 0.8 s for a one-word request on a loaded 2-core box). The other work
    is the kernel's count of runnable tasks (/proc/stat procs_running, less this one), averaged over 50 ms; a load
    average would count this process's own recent work. SIA_THREADS overrides.
    """
    import os
    import time

    if os.environ.get("SIA_THREADS", "").isdigit() and int(os.environ["SIA_THREADS"]) > 0:
        return int(os.environ["SIA_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    samples = []
    try:
        for _ in range(5):
            with open("/proc/stat") as f:
                samples += [int(line.split()[1]) - 1 for line in f if line.startswith("procs_running")]
            time.sleep(0.01)
    except (OSError, ValueError, IndexError):
        return cores
    others = round(sum(samples) / len(samples)) if samples else 0
    return max(1, cores - max(0, others))
