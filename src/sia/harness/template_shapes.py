"""Template code for answers of other shapes: open answers read out of a reply, and a vote of the nearest train examples.

- **Open answers** (a task with no labels: a number, a word, a span): a small
  model answers in a sentence ("The base form of the verb is 'fret'."), and the
  grader reads the first line. `OPEN` holds four readings of the answer in a
  reply (the last number, the last quoted span, what follows the last "is", the
  last line); a harness gets the one its `extract` names. Which fits a task is
  measured, not guessed: the builtin agent replays the champion's recorded
  train replies through each and grades them (`sia.agents.shape_edits`).
- **Neighbours** (a labelled task): the answer most of the k nearest train
  examples have in the policy model's own embeddings, with no generation. The
  harness chooses k by leave-one-out on its own pool of examples, so k is
  measured on the task in front of it. The pool's vectors are computed once per
  model by the policy service and kept, so each rollout costs one embedding.
"""

from __future__ import annotations

OPEN = {
    "last_number": '''

def open_answer(text):
    """The last number in the reply."""
    import re

    found = re.findall(r"-?\\d[\\d,]*(?:\\.\\d+)?", text)
    return found[-1].replace(",", "") if found else None
''',
    "quoted": '''

def open_answer(text):
    """The last quoted span of the reply, else its first line."""
    import re

    spans = [a or b or c for a, b, c in re.findall(r'"([^"\\n]+)"|\\u201c([^\\u201d\\n]+)\\u201d|\\'([^\\'\\n]+)\\'', text)]
    return spans[-1].strip() if spans else (text.splitlines()[0].strip() if text else None)
''',
    "after_is": '''

def open_answer(text):
    """What follows the last "is", "are", "was", "were" or ":" of the reply's first line, quotes and end punctuation off."""
    import re

    line = text.splitlines()[0] if text else ""
    parts = re.split(r"\\b(?:is|are|was|were)\\b|:", line)
    return parts[-1].strip().strip(" .,;!*\\"'\\u201c\\u201d") or None
''',
    "last_line": '''

def open_answer(text):
    """The reply's last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None
''',
}

NEIGHBOURS = '''

def neighbour_vote(ctx, example):
    """The answer most of the nearest demonstrations have, in the policy model's own embeddings (cosine, centred on the
    pool's mean), never counting the input itself. k is CONFIG["neighbours"], or the k that labels the pool best by
    leave-one-out."""
    import numpy as np

    pool = [CONFIG["input_prefix"] + d["input"] for d in CONFIG["demos"]]
    answers = [d["answer"] for d in CONFIG["demos"]]
    text = format_input(example)
    vectors = np.array(ctx.llm.embed(pool + [text]), dtype=float)
    vectors -= vectors[:-1].mean(0)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)

    def vote(order, k):
        near = [i for i in order if pool[i] != text][:k]
        counts = {}
        for i in near:
            counts[answers[i]] = counts.get(answers[i], 0) + 1
        top = max(counts.values())
        return next(answers[i] for i in near if counts[answers[i]] == top)

    k = CONFIG.get("neighbours", 0)
    if not k:
        sims = vectors[:-1] @ vectors[:-1].T
        np.fill_diagonal(sims, -np.inf)
        orders = np.argsort(-sims, axis=1)
        right = {c: sum(vote(list(orders[j]), c) == answers[j] for j in range(len(pool))) for c in (1, 3, 5, 9, 15, 25)
                 if c < len(pool)}
        k = max(right, key=lambda c: (right[c], -c))
    ctx.log("neighbour vote", k=k)
    return vote(list(np.argsort(-(vectors[:-1] @ vectors[-1]))), k)


def solve(example, ctx):
    return neighbour_vote(ctx, example)
'''


def apply(src: str, cfg) -> str:
    """`src` with an open-answer reading put in, when the config names one (a generating harness with no labels)."""
    if cfg.labels or cfg.extract not in OPEN or cfg.mode != "generate":
        return src
    src = src.replace("        return text.splitlines()[0].strip() if text else None", "        return open_answer(text)", 1)
    return src.replace("\n\ndef extract(reply):", OPEN[cfg.extract].rstrip("\n") + "\n\n\ndef extract(reply):", 1)
