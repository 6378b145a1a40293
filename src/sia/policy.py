"""The local policy: a causal LM (plus, later, LoRA adapters) that generates and scores in batches.

Why our own decode loop instead of `model.generate`: the policy service batches
requests from many rollouts, and those requests carry different sampling
parameters (temperature, top-p, max tokens, stop strings, seeds). `generate`
takes one generation config per call, so it would split such a batch into
groups and lose the sharing. The loop below runs every row in the same forward
pass, applies each row's own sampling, and returns the raw model logprob of
every sampled token (log-softmax of the unprocessed logits, temperature 1),
which is what policy-gradient training needs. It also counts forward passes,
so batching can be measured.

Simplifications on purpose: static batches (a request that arrives while a
batch is decoding waits for the next one); finished rows stay in the batch
until the longest row ends.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sia.models import EMBEDDED_NAME, resolve_model_path


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


@dataclass
class LocalPolicyConfig:
    model: str | None = None
    """Local HF model folder; None means the embedded SmolLM2-135M-Instruct."""
    max_context: int = 4096
    """Longest prompt + completion, in tokens."""
    threads: int | None = None
    """torch intra-op threads; None keeps torch's default."""


class LocalPolicy:
    """A transformers model held in memory. Not thread-safe: one caller (the batcher) at a time."""

    def __init__(self, config: LocalPolicyConfig | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.config = config or LocalPolicyConfig()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        path: Path = resolve_model_path(self.config.model)
        self.name = EMBEDDED_NAME if self.config.model in (None, "", EMBEDDED_NAME, "embedded") else path.name
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        self.model.eval()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.stop_ids = {i for i in (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")) if isinstance(i, int) and i >= 0}
        self.forward_passes = 0
        self._lock = threading.Lock()

    # -- prompts ---------------------------------------------------------------------------
    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def token_strings(self, ids: list[int]) -> list[str]:
        return [self.tokenizer.decode([i]) for i in ids]

    def model_names(self) -> list[str]:
        return [self.name, "base"]

    # -- batched generation ----------------------------------------------------------------
    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        import torch

        with self._lock, torch.inference_mode():
            return self._generate(requests, torch)

    def _forward(self, **kw):
        self.forward_passes += 1
        return self.model(**kw, use_cache=True, logits_to_keep=1)

    def _generate(self, requests: list[GenRequest], torch) -> list[GenResult]:
        B = len(requests)
        for r in requests:
            r.max_tokens = max(0, min(r.max_tokens, self.config.max_context - len(r.prompt_ids)))
        L = max(len(r.prompt_ids) for r in requests)
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, L), dtype=torch.long)
        for i, r in enumerate(requests):
            n = len(r.prompt_ids)
            input_ids[i, L - n :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            attn[i, L - n :] = 1
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        gens = []
        for r in requests:
            g = torch.Generator()
            g.manual_seed(r.seed if r.seed is not None else int.from_bytes(os.urandom(4), "little"))
            gens.append(g)
        out_ids: list[list[int]] = [[] for _ in requests]
        out_lp: list[list[float]] = [[] for _ in requests]
        finish = ["length"] * B
        done = [r.max_tokens == 0 for r in requests]
        texts: list[str | None] = [None] * B
        if all(done):
            return [GenResult([], [], "", "length") for _ in requests]
        out = self._forward(input_ids=input_ids, attention_mask=attn, position_ids=pos)
        cache = out.past_key_values
        logits = out.logits[:, -1, :]
        while True:
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            nxt = torch.full((B,), self.pad_id, dtype=torch.long)
            for i, r in enumerate(requests):
                if done[i]:
                    continue
                tok = self._sample(logits[i], r.temperature, r.top_p, gens[i], torch)
                nxt[i] = tok
                out_ids[i].append(tok)
                out_lp[i].append(float(logprobs[i, tok]))
                if tok in self.stop_ids:
                    done[i], finish[i] = True, "stop"
                    out_ids[i].pop(), out_lp[i].pop()  # the end-of-turn token is not part of the text
                    continue
                if r.stop:
                    text = self.decode(out_ids[i])
                    cut = min((text.find(s) for s in r.stop if s and s in text), default=-1)
                    if cut >= 0:
                        texts[i], done[i], finish[i] = text[:cut], True, "stop"
                        continue
                if len(out_ids[i]) >= r.max_tokens:
                    done[i] = True
            if all(done):
                break
            attn = torch.cat([attn, torch.ones((B, 1), dtype=torch.long)], dim=1)
            pos = pos[:, -1:] + 1
            out = self._forward(input_ids=nxt[:, None], attention_mask=attn, position_ids=pos, past_key_values=cache)
            cache = out.past_key_values
            logits = out.logits[:, -1, :]
        results = []
        for i in range(B):
            text = texts[i] if texts[i] is not None else self.decode(out_ids[i])
            results.append(GenResult(out_ids[i], out_lp[i], text, finish[i]))
        return results

    @staticmethod
    def _sample(logits, temperature: float, top_p: float, gen, torch) -> int:
        if temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        if top_p < 1.0:
            sorted_p, idx = torch.sort(probs, descending=True)
            keep = (sorted_p.cumsum(-1) - sorted_p) < top_p
            sorted_p = sorted_p * keep
            choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)
            return int(idx[choice])
        return int(torch.multinomial(probs, 1, generator=gen))

    # -- batched scoring -------------------------------------------------------------------
    def score(self, sequences: list[list[int]]) -> list[list[float | None]]:
        """Logprob of every token given the tokens before it (None for the first), one forward pass."""
        import torch

        with self._lock, torch.inference_mode():
            B, L = len(sequences), max(len(s) for s in sequences)
            ids = torch.full((B, L), self.pad_id, dtype=torch.long)
            attn = torch.zeros((B, L), dtype=torch.long)
            for i, s in enumerate(sequences):
                ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
                attn[i, : len(s)] = 1
            self.forward_passes += 1
            logits = self.model(input_ids=ids, attention_mask=attn).logits.float()
            lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            return [[None] + [float(x) for x in lp[i, : len(s) - 1]] for i, s in enumerate(sequences)]
