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

Rows join and leave a running batch between decode steps (continuous
batching, `sia.policy.decode`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from sia.policy.embedded import EMBEDDED_NAME, resolve_model_path
from sia.policy.generation import GenRequest, GenResult, TokenizerMethods, common_prefix, cpu_threads

__all__ = ["GenRequest", "GenResult", "LocalPolicy", "LocalPolicyConfig", "ModelSession", "TokenizerMethods", "common_prefix"]


@dataclass
class LocalPolicyConfig:
    model: str | None = None
    """Local HF model folder; None means the embedded SmolLM2-135M-Instruct."""
    max_context: int = 4096
    """Longest prompt + completion, in tokens."""
    threads: int | None = None
    """torch intra-op threads; None: all cores, or one when the machine is already busy (`generation.cpu_threads`)."""


class LocalPolicy(TokenizerMethods):
    """A transformers model held in memory. Not thread-safe: one caller (the batcher) at a time."""

    def __init__(self, config: LocalPolicyConfig | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.config = config or LocalPolicyConfig()
        torch.set_num_threads(self.config.threads or cpu_threads())
        path: Path = resolve_model_path(self.config.model)
        self.model_path = path
        self.name = EMBEDDED_NAME if self.config.model in (None, "", EMBEDDED_NAME, "embedded") else path.name
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        self.model.eval()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.stop_ids = {
            i for i in (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")) if isinstance(i, int) and i >= 0
        }
        self.forward_passes = 0
        self._lock = threading.RLock()
        self._adapters: dict[str, str] = {}

    # -- prompts ---------------------------------------------------------------------------
    # -- adapters ----------------------------------------------------------------------------
    @property
    def adapters(self) -> dict[str, str]:
        return dict(self._adapters)

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load a PEFT LoRA adapter from a folder and serve it as `name`, next to the base model."""
        from sia.errors import PolicyError

        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise PolicyError(f"{path} is not a PEFT adapter folder (no adapter_config.json)", "pass a folder saved by save_pretrained")
        if name in (self.name, "base") or not name or "/" in name:
            raise PolicyError(f"adapter name {name!r} is reserved or invalid", "use a short name such as a1")
        with self._lock:
            if name in self._adapters:
                if self._adapters[name] == str(path.resolve()):
                    return
                raise PolicyError(f"an adapter named {name!r} is already loaded from {self._adapters[name]}", "use a new name")
            from peft import PeftModel

            from sia.policy.adapters import check_adapter

            check_adapter(self.model.base_model.model if isinstance(self.model, PeftModel) else self.model, path)
            try:
                self._inject(name, path)
            except Exception as e:  # the check missed something: put the served model back as it was
                self._reload()
                raise PolicyError(
                    f"cannot load adapter {path}: {type(e).__name__}: {str(e)[:300]}", "save the adapter again with PEFT on this base model"
                ) from None
            self._adapters[name] = str(path.resolve())

    def _inject(self, name: str, path: Path) -> None:
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        self.model.eval()

    def _reload(self) -> None:
        """The base model from disk (under a second), with the adapters served before."""
        import torch
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(str(self.model_path), dtype=torch.float32).eval()
        for name, folder in self._adapters.items():
            self._inject(name, Path(folder))

    def unload_adapter(self, name: str) -> None:
        """Stop serving adapter `name` and free it (used for the intermediate adapters of on-policy training)."""
        with self._lock:
            if name in self._adapters:
                if len(self._adapters) == 1:  # the last one: back to the plain model (PEFT would keep it as the active name)
                    self.model = self.model.unload()
                else:
                    self.model.delete_adapter(name)
                del self._adapters[name]

    def use(self, model: str | None):
        """Context that runs the forward passes as `model`: the base (adapters off) or an adapter."""
        import contextlib

        if model in (None, self.name, "base") or not self._adapters:
            return self.model.disable_adapter() if self._adapters else contextlib.nullcontext()
        if model not in self._adapters:
            raise KeyError(f"unknown model {model!r}")
        self.model.set_adapter(model)
        return contextlib.nullcontext()

    # -- batched generation ----------------------------------------------------------------
    def generate(self, requests: list[GenRequest], model: str | None = None) -> list[GenResult]:
        import torch

        with self._lock, torch.inference_mode(), self.use(model):
            return self._generate(requests, torch)

    def _forward(self, **kw):
        self.forward_passes += 1
        return self.model(**kw, use_cache=True, logits_to_keep=1)

    def _generate(self, requests: list[GenRequest], torch) -> list[GenResult]:
        from sia.policy.decode import DecodeSession

        session = DecodeSession(self)
        results: dict[int, GenResult | Exception] = dict(session.add(requests, list(range(len(requests)))))
        while session.active:
            results.update(session.step())
        if refused := next((r for r in results.values() if isinstance(r, Exception)), None):
            raise refused
        return [r for r in (results[i] for i in range(len(requests))) if isinstance(r, GenResult)]

    def session(self, model: str | None = None) -> ModelSession:
        """A continuous-batching decode session for `model` (see `sia.policy.decode`)."""
        return ModelSession(self, model)

    def _result(self, row) -> GenResult:
        text = row.text if row.text is not None else self.decode(row.out_ids)
        return GenResult(row.out_ids, row.out_lp, text, row.finish)

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

    # -- embeddings ------------------------------------------------------------------------
    def embed(self, sequences: list[list[int]], model: str | None = None) -> list[list[float]]:
        """Each sequence's mean final hidden state (after the last norm) as `model` computes it, 16 sequences a pass."""
        import torch

        with self._lock, torch.inference_mode(), self.use(model):
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            body = getattr(base, base.base_model_prefix)
            out: list[list[float]] = []
            for start in range(0, len(sequences), 16):
                ids, attn = self._right_padded(sequences[start : start + 16], torch)
                self.forward_passes += 1
                hidden = body(input_ids=ids, attention_mask=attn).last_hidden_state.float()
                mask = attn[..., None].float()
                out += ((hidden * mask).sum(1) / mask.sum(1)).tolist()
            return out

    # -- batched scoring -------------------------------------------------------------------
    def score(self, groups: list[list[list[int]]], model: str | None = None) -> list[list[list[float | None]]]:
        """Logprob of every token given the tokens before it (None for the first).

        `groups` holds one list of sequences per request (a prompt followed by
        each candidate continuation). Shared prefixes are computed once: the
        prefix common to the whole batch (system prompt, instruction), then
        each request's own prefix, then the continuations, each level reusing
        the KV cache of the one before. Scoring two labels after a 90-token
        prompt then costs about 92 tokens of compute instead of 182.
        """
        import torch

        with self._lock, torch.inference_mode(), self.use(model):
            flat = [s for g in groups for s in g]
            plan = self._prefix_plan(groups)
            if plan is None:
                scored = self._score_plain(flat, torch)
            else:
                scored = self._score_shared(groups, *plan, torch=torch)
            out, k = [], 0
            for g in groups:
                out.append(scored[k : k + len(g)])
                k += len(g)
            return out

    def _prefix_plan(self, groups: list[list[list[int]]]) -> tuple[int, list[int]] | None:
        flat = [s for g in groups for s in g]
        if not flat or min(len(s) for s in flat) < 3:
            return None
        lcp_r = [common_prefix(g) for g in groups]
        g = min(common_prefix(flat), min(lcp_r) - 1, min(len(s) for s in flat) - 2)
        if g < 1:
            return None
        mids = [min(n, min(len(s) for s in grp) - 1) - g for n, grp in zip(lcp_r, groups)]
        if min(mids) < 1:
            return None
        return g, mids

    def _right_padded(self, sequences: list[list[int]], torch):
        """Token ids padded on the right to the longest sequence, and their attention mask."""
        B, L = len(sequences), max(len(s) for s in sequences)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, L), dtype=torch.long)
        for i, s in enumerate(sequences):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            attn[i, : len(s)] = 1
        return ids, attn

    def _score_plain(self, sequences: list[list[int]], torch) -> list[list[float | None]]:
        ids, attn = self._right_padded(sequences, torch)
        self.forward_passes += 1
        logits = self.model(input_ids=ids, attention_mask=attn).logits.float()
        lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        return [[None] + [float(x) for x in lp[i, : len(s) - 1]] for i, s in enumerate(sequences)]

    @staticmethod
    def _select_rows(cache, index) -> None:
        for layer in cache.layers:
            layer.batch_select_indices(index)

    def _score_shared(self, groups, g: int, mids: list[int], torch) -> list[list[float | None]]:
        from transformers import DynamicCache

        first = groups[0][0]
        # level 0: the prefix shared by every sequence in the batch
        cache = DynamicCache(config=self.model.config)
        self.forward_passes += 1
        out0 = self.model(input_ids=torch.tensor([first[:g]]), past_key_values=cache, use_cache=True)
        lp0 = torch.log_softmax(out0.logits[0].float(), dim=-1)
        # level 1: each request's own prefix
        R, M = len(groups), max(mids)
        ids1 = torch.full((R, M), self.pad_id, dtype=torch.long)
        mask1 = torch.zeros((R, M), dtype=torch.long)
        for r, grp in enumerate(groups):
            ids1[r, : mids[r]] = torch.tensor(grp[0][g : g + mids[r]], dtype=torch.long)
            mask1[r, : mids[r]] = 1
        self._select_rows(cache, torch.zeros(R, dtype=torch.long))
        attn1 = torch.cat([torch.ones((R, g), dtype=torch.long), mask1], dim=1)
        pos1 = (g + torch.arange(M)).expand(R, M)
        self.forward_passes += 1
        out1 = self.model(input_ids=ids1, attention_mask=attn1, position_ids=pos1, past_key_values=cache, use_cache=True)
        lp1 = torch.log_softmax(out1.logits.float(), dim=-1)
        # level 2: the continuations
        rows = [(r, s) for r, grp in enumerate(groups) for s in grp]
        N = len(rows)
        S = max(len(s) - g - mids[r] for r, s in rows)
        ids2 = torch.full((N, S), self.pad_id, dtype=torch.long)
        mask2 = torch.zeros((N, S), dtype=torch.long)
        pos2 = torch.zeros((N, S), dtype=torch.long)
        for n, (r, s) in enumerate(rows):
            tail = s[g + mids[r] :]
            ids2[n, : len(tail)] = torch.tensor(tail, dtype=torch.long)
            mask2[n, : len(tail)] = 1
            pos2[n] = g + mids[r] + torch.arange(S)
        row_of = torch.tensor([r for r, _ in rows], dtype=torch.long)
        self._select_rows(cache, row_of)
        attn2 = torch.cat([torch.ones((N, g), dtype=torch.long), mask1[row_of], mask2], dim=1)
        self.forward_passes += 1
        out2 = self.model(input_ids=ids2, attention_mask=attn2, position_ids=pos2, past_key_values=cache, use_cache=True)
        lp2 = torch.log_softmax(out2.logits.float(), dim=-1)
        results = []
        for n, (r, s) in enumerate(rows):
            m = mids[r]
            vals: list[float | None] = [None]
            vals += [float(lp0[j - 1, s[j]]) for j in range(1, g + 1)]  # tokens 1..g, the last one predicted by level 0's end
            vals += [float(lp1[r, j - g - 1, s[j]]) for j in range(g + 1, g + m + 1)]
            vals += [float(lp2[n, j - g - m - 1, s[j]]) for j in range(g + m + 1, len(s))]
            results.append(vals)
        return results


class ModelSession:
    """A decode session bound to one model name; each call runs under the policy lock as that model,
    so scoring requests for other adapters can run between two of its steps."""

    def __init__(self, policy: LocalPolicy, model: str | None) -> None:
        from sia.policy.decode import DecodeSession

        self.policy, self.model = policy, model
        self.inner = DecodeSession(policy)

    @property
    def active(self) -> int:
        return self.inner.active

    def add(self, requests: list[GenRequest], tags: list) -> list:
        import torch

        with self.policy._lock, torch.inference_mode(), self.policy.use(self.model):
            return self.inner.add(requests, tags)

    def step(self) -> list:
        import torch

        with self.policy._lock, torch.inference_mode(), self.policy.use(self.model):
            return self.inner.step()

    def drop(self, gone) -> None:
        with self.policy._lock:
            self.inner.drop(gone)

    def release(self) -> None:
        self.inner.release()
