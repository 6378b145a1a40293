"""Continuous batching on llama.cpp: `LlamaSession`, the generation half of `sia.policy.llama.LlamaPolicy`.

Rows join and leave between decode steps, as in `sia.policy.decode`; each row
is one llama.cpp sequence of the policy's shared context, with its own
sampling (temperature, top-p, stop strings, a seeded generator). The logprob
recorded for each token is the raw log-softmax of the model's logits, as on HF.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sia.errors import PolicyError
from sia.policy.generation import GenRequest, GenResult, common_prefix


@dataclass
class _Row:
    request: GenRequest
    tag: Any
    seq: int
    rng: np.random.Generator
    pos: int
    out_ids: list[int] = field(default_factory=list)
    out_lp: list[float] = field(default_factory=list)
    text: str | None = None
    finish: str = "length"
    done: bool = False


class LlamaSession:
    """Continuous batching on llama.cpp: rows join between steps and leave when done (the interface of `ModelSession`).

    Rows that do not fit yet (no free sequence, or not enough KV cells) wait in the session and join as others finish.
    """

    def __init__(self, policy: Any, model: str | None) -> None:
        """`policy`: the `sia.policy.llama.LlamaPolicy` whose context the rows share."""
        self.policy, self.model = policy, model
        self.live: list[_Row] = []
        self.pending: list[_Row] = []
        self.inner = self  # the batcher fails `inner.rows` when a step raises

    @property
    def rows(self) -> list[_Row]:
        return self.live + self.pending

    @property
    def active(self) -> int:
        return len(self.live) + len(self.pending)

    def _need(self, r: GenRequest) -> int:
        return len(r.prompt_ids) + max(0, min(r.max_tokens, self.policy.config.max_context - len(r.prompt_ids)))

    def fits(self, requests: list[GenRequest]) -> bool:
        """Room for these requests now: a sequence each, and KV cells for their prompts and replies."""
        p = self.policy
        return (not self.pending and len(requests) <= len(p.free_seqs)
                and p.cells + sum(self._need(r) for r in requests) <= p.config.n_ctx - 2 * p.config.max_context)

    def add(self, requests: list[GenRequest], tags: list) -> list[tuple[Any, GenResult | Exception]]:
        """Queue new rows and start those that fit; (tag, GenResult) of rows already finished, and (tag, exception) of rows
        that cannot be admitted (only their own request fails)."""
        import os

        p = self.policy
        finished: list[tuple[Any, GenResult | Exception]] = []
        for r, tag in zip(requests, tags):
            try:
                if not r.prompt_ids or len(r.prompt_ids) >= p.config.max_context \
                        or self._need(r) > p.config.n_ctx - 2 * p.config.max_context:
                    raise PolicyError(f"a prompt of {len(r.prompt_ids)} tokens does not fit the context of {p.config.max_context}",
                                      "shorten the prompt")
                r.max_tokens = max(0, min(r.max_tokens, p.config.max_context - len(r.prompt_ids)))
                seed = r.seed if r.seed is not None else int.from_bytes(os.urandom(4), "little")
                rng = np.random.default_rng(seed)
            except (PolicyError, ValueError, TypeError, OverflowError) as e:
                finished.append((tag, e))
                continue
            if r.max_tokens == 0:
                finished.append((tag, GenResult([], [], "", "length")))
                continue
            self.pending.append(_Row(r, tag, -1, rng, len(r.prompt_ids)))
        return finished + self._admit()

    def drop(self, gone) -> None:
        """Remove the rows whose tag `gone(tag)` says were cancelled; their sequences and cells go back to the context."""
        with self.policy._lock:
            for row in [r for r in self.live if gone(r.tag)]:
                self._free(row)
            self.live = [r for r in self.live if not gone(r.tag)]
            self.pending = [r for r in self.pending if not gone(r.tag)]

    def release(self) -> None:
        """Give back every sequence and cell the session holds (after a failed step)."""
        with self.policy._lock:
            for row in self.live:
                self._free(row)
            self.live, self.pending = [], []

    def _admit(self) -> list[tuple[Any, GenResult]]:
        """Start the waiting rows that fit: their prompts decoded together (each prefix a row of this session already
        holds copied, not decoded again; see `_sources`), and each row's first token."""
        p = self.policy
        with p._lock:
            new = []
            while (
                self.pending and p.free_seqs and p.cells + self._need(self.pending[0].request) <= p.config.n_ctx - 2 * p.config.max_context
            ):
                row = self.pending.pop(0)
                row.seq = p.free_seqs.pop(0)
                p.cells += self._need(row.request)
                new.append(row)
            if not new:
                return []
            p._use(self.model)
            sources = self._sources(new)
            logits: dict[int, np.ndarray] = {}
            try:
                for phase in (False, True):  # rows that copy nothing first, then those that copy from them or from live rows
                    entries = []
                    for row in new:
                        src, shared = sources[id(row)]
                        if (src is not None) != phase:
                            continue
                        if src is not None:
                            p.lc.llama_memory_seq_cp(p.mem, src.seq, row.seq, 0, shared)
                        ids = row.request.prompt_ids
                        entries += [(ids[i], i, row.seq, id(row) if i == len(ids) - 1 else None) for i in range(shared, len(ids))]
                    if entries:
                        logits.update(p._decode(entries))
            except Exception:
                for row in new:
                    self._free(row)
                raise
            self.live += new
            return self._sample(logits)

    def _sources(self, new: list[_Row]) -> dict[int, tuple[_Row | None, int]]:
        """For each new row, the row of this session (live, or new and decoded first) whose prompt shares the longest
        prefix with its own, and that prefix's length (at most all but its last token, whose logits the row needs), or
        (None, 0) below `SHARED_MIN` tokens. The rows of a GRPO group, or of a harness that repeats its instructions and
        demonstrations, then read the common part of their prompts once: llama.cpp's copy of a sequence's cells only
        tags them with another sequence. Rows of one session serve the same model and adapter, so their cells agree."""
        out: dict[int, tuple[_Row | None, int]] = {}
        firsts: list[_Row] = []
        for row in new:
            ids = row.request.prompt_ids
            best, shared = None, 0
            for other in self.live + firsts:
                n = min(common_prefix([ids, other.request.prompt_ids]), len(ids) - 1)
                if n > shared:
                    best, shared = other, n
            if shared < SHARED_MIN:
                best, shared = None, 0
                firsts.append(row)
            out[id(row)] = (best, shared)
        return out

    def step(self) -> list[tuple[Any, GenResult]]:
        p = self.policy
        with p._lock:
            finished = []
            try:
                if self.live:
                    p._use(self.model)
                    logits = p._decode([(row.out_ids[-1], row.pos - 1, row.seq, id(row)) for row in self.live])
                    finished = self._sample(logits)
                return finished + self._admit()
            except Exception:  # the batcher fails every row's job; their sequences go back to the context
                for row in self.live:
                    self._free(row)
                raise

    def _free(self, row: _Row) -> None:
        """Give row's sequence and cells back to the context (once: a freed row holds none)."""
        if row.seq < 0:
            return
        p = self.policy
        p._drop(row.seq)
        p.free_seqs.append(row.seq)
        p.cells -= self._need(row.request)
        row.seq = -1

    def _sample(self, logits: dict[int, np.ndarray]) -> list[tuple[Any, GenResult]]:
        p = self.policy
        for row in self.live:
            if id(row) not in logits:
                continue
            r = row.request
            tok, lp = _pick(logits[id(row)], r, row.rng)
            row.out_ids.append(tok)
            row.out_lp.append(lp)
            row.pos += 1
            if tok in p.stop_ids:
                row.out_ids.pop(), row.out_lp.pop()
                row.done, row.finish = True, "stop"
            elif r.stop:
                text = p.decode(row.out_ids)
                cut = min((text.find(s) for s in r.stop if s and s in text), default=-1)
                if cut >= 0:
                    row.text, row.done, row.finish = text[:cut], True, "stop"
            if not row.done and len(row.out_ids) >= r.max_tokens:
                row.done = True
        finished = []
        for row in [r for r in self.live if r.done]:
            text = row.text if row.text is not None else p.decode(row.out_ids)
            finished.append((row.tag, GenResult(row.out_ids, row.out_lp, text, row.finish)))
            self._free(row)
        self.live = [r for r in self.live if not r.done]
        return finished


SHARED_MIN = 8
"""Prompt tokens a new row must share with a row already there to copy them rather than decode them again."""


def _pick(logits: np.ndarray, r: GenRequest, rng: np.random.Generator) -> tuple[int, float]:
    """The next token (greedy, or sampled at the request's temperature and top-p) and its raw log-softmax.

    One exponential of the logits serves both the logprob and, at temperature 1, the sampling, which inverts the
    cumulative sum with one uniform draw. numpy's `Generator.choice(p=...)` checks and normalises `p` on every call:
    over a 49k-token vocabulary that made sampling 16 rows cost about as much as llama.cpp's decode step for them.
    """
    shifted = logits - logits.max()
    e = np.exp(shifted)
    log_z = float(np.log(e.sum(dtype=np.float64)))
    if r.temperature <= 0:
        tok = int(logits.argmax())
        return tok, float(shifted[tok]) - log_z
    probs = e if r.temperature == 1.0 else np.exp(shifted / r.temperature)
    if r.top_p < 1.0:  # keep the smallest set of top tokens whose mass reaches top_p
        order = np.argsort(-probs)
        mass = np.cumsum(probs[order]) / probs.sum()
        probs = probs.copy()
        probs[order[(mass - probs[order] / probs.sum()) >= r.top_p]] = 0.0
    cum = np.cumsum(probs, dtype=np.float64)
    tok = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(cum) - 1)
    while probs[tok] == 0.0 and tok > 0:  # a draw rounded up to the total lands past the last kept token
        tok -= 1
    return tok, float(shifted[tok]) - log_z
