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
