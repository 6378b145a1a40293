"""The batcher's worker survives a failing decode session, and fails exactly the affected requests."""

import pytest

from sia.policy.batcher import Batcher


class ExplodingSession:
    """A session whose prefill raises, as a model error would."""

    def __init__(self, model):
        self.model = model
        self.active = 0

    def add(self, items, tags):
        raise RuntimeError("prefill failed")

    def step(self):
        return []


def test_failed_session_fails_its_requests_and_the_worker_lives_on():
    calls = []
    b = Batcher(lambda kind, model, items: calls.append(items) or [len(x) for x in items], open_session=ExplodingSession)
    try:
        gen = b.submit("generate", "base", ["a", "b"])
        with pytest.raises(RuntimeError, match="prefill failed"):
            gen.result(timeout=10)
        score = b.submit("score", "base", [[1, 2, 3]])
        assert score.result(timeout=10) == [3]  # the worker still serves other work
    finally:
        b.close()


def test_llama_sampling_follows_the_softmax_and_records_the_raw_logprob():
    """The llama.cpp engine's sampler, alone: greedy, temperature, top-p, and the logprob it records."""
    import numpy as np

    from sia.policy.llama_session import _pick
    from sia.policy.local import GenRequest

    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32)) + 7.0
    raw = np.log([0.5, 0.3, 0.15, 0.05])
    rng = np.random.default_rng(0)
    assert _pick(logits, GenRequest([1], 1, 0.0, 1.0, [], None), rng) == (0, pytest.approx(raw[0], abs=1e-5))
    draws = [_pick(logits, GenRequest([1], 1, 1.0, 1.0, [], None), rng) for _ in range(20000)]
    freq = np.bincount([t for t, _ in draws], minlength=4) / len(draws)
    assert freq == pytest.approx([0.5, 0.3, 0.15, 0.05], abs=0.015)
    assert all(lp == pytest.approx(raw[t], abs=1e-5) for t, lp in draws[:50]), "the logprob is the untempered one"
    hot = np.bincount([_pick(logits, GenRequest([1], 1, 2.0, 1.0, [], None), rng)[0] for _ in range(20000)], minlength=4) / 20000
    flat = np.sqrt([0.5, 0.3, 0.15, 0.05])
    assert hot == pytest.approx(flat / flat.sum(), abs=0.015)
    top = {_pick(logits, GenRequest([1], 1, 1.0, 0.75, [], None), rng)[0] for _ in range(2000)}
    assert top == {0, 1}, "top-p 0.75 keeps the two tokens whose mass reaches it"
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    req = GenRequest([1], 1, 0.7, 1.0, [], None)
    assert [_pick(logits, req, a)[0] for _ in range(30)] == [_pick(logits, req, b)[0] for _ in range(30)], "seeded draws repeat"


def test_llama_sampling_over_a_whole_vocabulary_leaves_out_only_a_negligible_tail():
    """Over a 49k vocabulary with a long tail, the recorded logprob is the full log-softmax and draws follow it."""
    import numpy as np

    from sia.policy.llama_session import _pick
    from sia.policy.local import GenRequest

    gen = np.random.default_rng(1)
    logits = (gen.normal(0, 4, 49152) - 20).astype(np.float32)
    logits[[7, 70, 700]] = [12.0, 11.0, 10.5]
    full = logits.astype(np.float64) - np.logaddexp.reduce(logits.astype(np.float64))
    rng = np.random.default_rng(0)
    assert _pick(logits, GenRequest([1], 1, 0.0, 1.0, [], None), rng) == (7, pytest.approx(full[7], abs=1e-6))
    for temperature in (0.7, 1.0, 1.5):
        draws = [_pick(logits, GenRequest([1], 1, temperature, 1.0, [], None), rng) for _ in range(4000)]
        assert all(lp == pytest.approx(full[t], abs=1e-6) for t, lp in draws)
        tempered = np.exp(full / temperature) / np.exp(full / temperature).sum()
        freq = np.bincount([t for t, _ in draws], minlength=len(logits)) / len(draws)
        assert freq[[7, 70, 700]] == pytest.approx(tempered[[7, 70, 700]], abs=0.03)
