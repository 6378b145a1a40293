"""The policy on llama.cpp: the quantized GGUF model, batched, with LoRA adapters, behind `LocalPolicy`'s interface.

Why: batch-1 decoding of the fp32 HF model reads 540 MB of weights per token,
which caps it near 20 tokens/s on this machine; llama.cpp reads the 4-bit GGUF
(about 80 MB) and decodes several sequences per call. It runs through
llama-cpp-python's low-level bindings rather than its `Llama` class, which
serves one sequence at a time: here each request is a sequence of one shared
context, and a decode step carries one token of every active sequence.

- Generation: rows join and leave between steps (`sia.policy.llama_session`,
  the same continuous batching as `sia.policy.decode`).
- Scoring: each group's common prefix is decoded once, with logits at every
  position, and stays cached for the next group, which decodes only from
  where the two differ; the prefix's KV cache is copied to one sequence per
  continuation, and only the tails are decoded on top.
- Adapters: a PEFT folder is converted once to llama.cpp's GGUF adapter format
  (`sia.policy.gguf_lora`) and loaded by name; a decode call applies the
  adapter of the model it serves, so sequences of different models never share
  a call. A failed load leaves the served model as it was.
- Weights: re-encoded once as Q8_0, which llama.cpp batches better than the
  4-bit file at the same fidelity (see `LlamaPolicyConfig.weights`).
- Tokens: the HF tokenizer of the same model (its chat template, its ids), so
  a recorded call's token ids are the trainer's.
Simplification on purpose: a scoring group's sequences are decoded one after
another (generation is where batching pays).
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sia.errors import PolicyError
from sia.policy.embedded import EMBEDDED_NAME, gguf_path, resolve_model_path
from sia.policy.generation import GenRequest, GenResult, TokenizerMethods, common_prefix, cpu_threads
from sia.policy.gguf_lora import adapter_gguf, requantized

EXTRA_BUFFERS = os.environ.get("SIA_LLAMA_EXTRA_BUFFERS", "0") == "1"
"""llama.cpp's extra weight buffers (repacked and AMX layouts). Off: on a Sapphire Rapids VM here, ggml's AMX matrix
product died with an illegal instruction (tilezero in a worker thread) although AMX works in a plain program; the
standard layout has no such path. SIA_LLAMA_EXTRA_BUFFERS=1 turns them back on."""


@dataclass
class LlamaPolicyConfig:
    model: str | None = None
    """None: the embedded model's GGUF; else a .gguf file (its HF tokenizer folder beside it as `<name>.hf`)."""
    max_context: int = 4096
    """Longest prompt + completion of one sequence, in tokens."""
    n_ctx: int = 32768
    """KV cells shared by all sequences."""
    n_seq: int = 18
    """Sequences in the context: generation rows plus two kept for scoring."""
    n_batch: int = 512
    weights: str = "q8_0"
    """q8_0: serve the model's weights re-encoded once as Q8_0 (cached under SIA_HOME/cache); "file": as the file has
    them. Q8_0 because llama.cpp's CPU kernels batch it better: measured here on the embedded Q4_1 model, a decode step
    of 16 sequences gave 295 tokens/s against 187, one sequence 84 against 94, with the same distance to the HF
    model's logprobs (mean 0.117 against 0.107 nats on 40 sentiment label scores). Q4_0 was faster still and 15×
    further from HF (1.7 nats), so it is not offered."""
    threads: int | None = None


@ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
def _quiet(level, text, data):  # llama.cpp logs to stderr by default
    pass


class LlamaPolicy(TokenizerMethods):
    """A GGUF model in one llama.cpp context. Not thread-safe: one caller (the batcher) at a time, as `LocalPolicy`."""

    def __init__(self, config: LlamaPolicyConfig | None = None) -> None:
        from llama_cpp import llama_cpp as lc
        from transformers import AutoTokenizer

        self.lc, self.config = lc, config or LlamaPolicyConfig()
        lc.llama_backend_init()
        lc.llama_log_set(_quiet, None)
        if self.config.model in (None, "", EMBEDDED_NAME, "embedded"):
            gguf, hf = gguf_path(), resolve_model_path(None)
        else:
            gguf = Path(self.config.model)
            hf = gguf.with_suffix(".hf")
        self.name, self.model_path = EMBEDDED_NAME if self.config.model in (None, "", EMBEDDED_NAME, "embedded") else gguf.stem, hf
        self.tokenizer = AutoTokenizer.from_pretrained(str(hf))
        if self.config.weights == "q8_0":
            gguf = requantized(lc, Path(gguf), "q8_0")
        elif self.config.weights != "file":
            raise PolicyError(f"unknown llama.cpp weights {self.config.weights!r}", "use q8_0 or file")
        self.gguf = Path(gguf)
        mp = lc.llama_model_default_params()
        mp.use_extra_bufts = EXTRA_BUFFERS  # see EXTRA_BUFFERS
        self.model = lc.llama_model_load_from_file(str(gguf).encode(), mp)
        if not self.model:
            raise PolicyError(f"llama.cpp cannot load {gguf}", "pass a GGUF model file")
        if self.config.n_ctx < 3 * self.config.max_context or self.config.n_seq < 3:
            raise PolicyError(f"a llama.cpp context of {self.config.n_ctx} cells and {self.config.n_seq} sequences is too small",
                              "n_ctx must hold 3 sequences of max_context (2 for scoring, 1 reply); n_seq at least 3")
        cp = lc.llama_context_default_params()
        threads = self.config.threads or cpu_threads()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = self.config.n_ctx, self.config.n_batch, self.config.n_batch, self.config.n_seq
        cp.n_threads = cp.n_threads_batch = threads
        cp.kv_unified, cp.no_perf = True, True
        self.ctx = lc.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise PolicyError("llama.cpp cannot make a context", "lower n_ctx")
        self.mem = lc.llama_get_memory(self.ctx)
        self.n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
        self.batch = lc.llama_batch_init(self.config.n_batch, 0, 1)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.stop_ids = {i for i in (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
                         if isinstance(i, int) and i >= 0}
        self.forward_passes = 0
        self.decoded_tokens = 0
        """Tokens decoded (prompt tokens read, and one per generated token): what copying shared prompt prefixes saves."""
        self.free_seqs, self.score_seqs = list(range(self.config.n_seq - 2)), (self.config.n_seq - 2, self.config.n_seq - 1)
        self.cells = 0
        self._lock = threading.RLock()
        self._adapters: dict[str, tuple[str, Any]] = {}
        self._active: str | None = None
        self._cached: tuple[list[int], list[float], Any] = ([], [], None)  # the scoring prefix in `pre` (see `_prefix`)

    # -- adapters ------------------------------------------------------------------------------
    @property
    def adapters(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._adapters.items()}

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Serve the PEFT adapter folder `path` as `name`: checked, converted to GGUF once, loaded without a restart."""
        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise PolicyError(f"{path} is not a PEFT adapter folder (no adapter_config.json)", "pass a folder saved by save_pretrained")
        if name in (self.name, "base") or not name or "/" in name:
            raise PolicyError(f"adapter name {name!r} is reserved or invalid", "use a short name such as a1")
        with self._lock:
            if name in self._adapters:
                if self._adapters[name][0] == str(path.resolve()):
                    return
                raise PolicyError(f"an adapter named {name!r} is already loaded from {self._adapters[name][0]}", "use a new name")
            cache = adapter_gguf(path, json.loads((self.model_path / "config.json").read_text()))
            handle = self.lc.llama_adapter_lora_init(self.model, str(cache).encode())
            if not handle:
                raise PolicyError(f"llama.cpp refused the adapter {path}", "train it on this base model")
            self._adapters[name] = (str(path.resolve()), handle)

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            if name in self._adapters:
                if self._active == name:
                    self._use(None)
                self.lc.llama_adapter_lora_free(self._adapters.pop(name)[1])

    def _use(self, model: str | None) -> None:
        """Apply `model`'s adapter (or none) to the context for the next decode calls."""
        name = None if model in (None, self.name, "base") else model
        if name == self._active:
            return
        self._cached = ([], [], None)  # a cached scoring prefix was computed with the other adapter
        if name is not None and name not in self._adapters:
            raise KeyError(f"unknown model {model!r}")
        if name is None:
            self.lc.llama_set_adapters_lora(self.ctx, None, 0, None)
        else:
            arr = (self.lc.llama_adapter_lora_p_ctypes * 1)(self._adapters[name][1])
            self.lc.llama_set_adapters_lora(self.ctx, arr, 1, (ctypes.c_float * 1)(1.0))
        self._active = name

    # -- decoding ------------------------------------------------------------------------------
    def _decode(self, entries: list[tuple[int, int, int, Any]], embeddings: bool = False) -> dict[Any, np.ndarray]:
        """Decode (token, position, sequence, key) entries in as few calls as the batch allows; the logits (or, with the
        context's embedding output on, the final hidden states) of every entry with a key, as a copy."""
        read, width = ((self.lc.llama_get_embeddings_ith, self.lc.llama_model_n_embd(self.model)) if embeddings
                       else (self.lc.llama_get_logits_ith, self.n_vocab))
        out: dict[Any, np.ndarray] = {}
        b, lc, cap = self.batch, self.lc, self.config.n_batch
        for start in range(0, len(entries), cap):
            chunk = entries[start:start + cap]
            b.n_tokens = len(chunk)
            for i, (tok, pos, seq, key) in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i] = tok, pos, 1
                b.seq_id[i][0] = seq
                b.logits[i] = key is not None
            self.forward_passes += 1
            self.decoded_tokens += len(chunk)
            if lc.llama_decode(self.ctx, b) != 0:
                raise PolicyError("llama.cpp failed to decode a batch (the KV cache is full?)", "lower the concurrency")
            for i, (_, _, _, key) in enumerate(chunk):
                if key is not None:
                    out[key] = np.ctypeslib.as_array(read(self.ctx, i), shape=(width,)).copy()
        return out

    def _packs(self, lengths: list[int], cap: int) -> Iterator[list[tuple[int, int]]]:
        """Indices of `lengths` in groups that decode together, each index with a sequence no generating row holds
        (the spare scoring sequence and the free ones): as many as there are such sequences, within `cap` tokens."""
        spare = [self.score_seqs[1], *self.free_seqs]
        pending = list(range(len(lengths)))
        while pending:
            group, used = [], 0
            while pending and len(group) < len(spare) and (not group or used + lengths[pending[0]] <= cap):
                used += lengths[pending[0]]
                group.append((pending.pop(0), spare[len(group)]))
            yield group

    def _drop(self, seq: int) -> None:
        self.lc.llama_memory_seq_rm(self.mem, seq, -1, -1)

    @staticmethod
    def _logprobs(logits: np.ndarray) -> np.ndarray:
        m = logits.max(-1, keepdims=True)
        return logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))

    def generate(self, requests: list[GenRequest], model: str | None = None) -> list[GenResult]:
        """All requests to completion; more than the context holds at once join as earlier ones finish."""
        session = self.session(model)
        results = dict(session.add(requests, list(range(len(requests)))))
        while session.active:
            results.update(session.step())
        if refused := next((r for r in results.values() if isinstance(r, Exception)), None):
            raise refused
        return [results[i] for i in range(len(requests))]

    def session(self, model: str | None = None):
        from sia.policy.llama_session import LlamaSession

        return LlamaSession(self, model)

    def score(self, groups: list[list[list[int]]], model: str | None = None) -> list[list[list[float | None]]]:
        """Logprob of every token given the tokens before it (None for the first), each group's shared prefix decoded once."""
        with self._lock:
            self._use(model)
            return [self._score_group(g) for g in groups]

    def _score_group(self, seqs: list[list[int]]) -> list[list[float | None]]:
        """The group's shared prefix decoded once (and kept, see `_prefix`); the continuations after it decoded together,
        each in a sequence no generating row holds that shares the prefix's cells, as many per call as the cells kept
        for scoring hold (20 labels cost one decode call, not 20)."""
        n = min(len(s) for s in seqs)
        lcp = common_prefix(seqs)
        lcp = max(1, min(lcp, n - 1)) if n > 1 else 1
        pre = self.score_seqs[0]
        lp_pre, last = self._prefix(seqs[0][:lcp])
        results: list[list[float | None]] = [[None, *lp_pre] for _ in seqs]
        for group in self._packs([len(s) - lcp for s in seqs], self.config.max_context):
            group = [(k, seq) for k, seq in group if len(seqs[k]) > lcp]
            try:
                for _, seq in group:
                    self.lc.llama_memory_seq_cp(self.mem, pre, seq, 0, lcp)
                tails = self._decode([(t, lcp + i, seq, (k, i)) for k, seq in group for i, t in enumerate(seqs[k][lcp:])])
            finally:
                for _, seq in group:
                    self._drop(seq)
            for k, _ in group:
                prev = last
                for i, t in enumerate(seqs[k][lcp:]):
                    results[k].append(float(self._logprobs(prev)[t]))
                    prev = tails[(k, i)]
        return results

    def embed(self, sequences: list[list[int]], model: str | None = None) -> list[list[float]]:
        """Each sequence's mean final hidden state (after the last norm, llama.cpp's per-token embeddings) as `model`
        computes it, with the context's embedding output switched on. Short sequences share a decode call, each in a
        sequence no generating row holds; together they stay within the cells kept for scoring."""
        lc = self.lc
        sums = [np.zeros(lc.llama_model_n_embd(self.model), dtype=np.float64) for _ in sequences]
        with self._lock:
            self._use(model)
            lc.llama_set_embeddings(self.ctx, True)
            try:
                for group in self._packs([len(s) for s in sequences], min(self.config.n_batch, self.config.max_context)):
                    try:
                        got = self._decode([(t, pos, seq, (k, pos)) for k, seq in group for pos, t in enumerate(sequences[k])],
                                           embeddings=True)
                    finally:
                        for _, seq in group:
                            self._drop(seq)
                    for (k, _), vector in got.items():
                        sums[k] += vector
            finally:
                lc.llama_set_embeddings(self.ctx, False)
        return [(v / max(1, len(s))).tolist() for v, s in zip(sums, sequences)]

    def forget_prefix(self) -> None:
        """Drop the cached scoring prefix (the next group decodes its prefix from the start)."""
        with self._lock:
            self._drop(self.score_seqs[0])
            self._cached = ([], [], None)

    def _prefix(self, prefix: list[int]) -> tuple[list[float], np.ndarray]:
        """A scoring prefix in the `pre` sequence: (logprob of each token after the first, logits after the last).

        The prefix stays cached until the next one, which decodes only from where the two differ: requests of one
        harness share long heads (instructions, demonstrations), and reading them again cost 4x HF's time on a few-shot
        prompt (HF shares the head of every batch). A change of adapter clears the cache (`_use`).
        """
        ids, lps, _ = self._cached
        same = next((i for i in range(min(len(ids), len(prefix))) if ids[i] != prefix[i]), min(len(ids), len(prefix)))
        if same == len(prefix) == len(ids):
            return self._cached[1], self._cached[2]
        keep = max(0, min(same, len(prefix)) - 1)  # re-decode one shared token for the logits the next one needs
        self.lc.llama_memory_seq_rm(self.mem, self.score_seqs[0], keep, -1)
        logits = self._decode([(t, keep + i, self.score_seqs[0], i) for i, t in enumerate(prefix[keep:])])
        new = [float(self._logprobs(logits[i - 1])[prefix[keep + i]]) for i in range(1, len(prefix) - keep)]
        lps = lps[:keep] + new  # positions 1..keep are the cached prefix's (the same tokens before them)
        self._cached = (list(prefix), lps, logits[len(prefix) - keep - 1])
        return lps, self._cached[2]

    def close(self) -> None:
        with self._lock:
            for name in list(self._adapters):
                self.unload_adapter(name)
            self.lc.llama_batch_free(self.batch)
            self.lc.llama_free(self.ctx)
            self.lc.llama_model_free(self.model)
