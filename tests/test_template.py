"""The template harness's later settings, each run as generated code against a recording stand-in for ctx.llm."""

from sia.harness.template import Demo, make_config, read_config, render
from sia.task.loading import load_task


class Recorder:
    """ctx.llm for a template harness: renders chats as text, scores each candidate word by how often the prompt holds it."""

    def __init__(self):
        self.chats, self.scored = [], []

    def render_chat(self, messages):
        self.chats.append(messages)
        return "\n".join(f"<{m['role']}>{m['content']}" for m in messages) + "\n<assistant>"

    def embed(self, texts):
        """A bag of words over a fixed vocabulary: texts that share words are near."""
        self.embedded = list(texts)
        vocab = ["fine", "dull", "film", "book", "loud", "quiet"]
        return [[float(t.count(w)) for w in vocab] for t in texts]

    def logprobs(self, prompt, words):
        self.scored.append((prompt, list(words)))
        return [float(prompt.lower().count(w.lower())) for w in words]


class Ctx:
    def __init__(self):
        self.llm = Recorder()

    def log(self, *a, **k):
        pass


def run(cfg, text):
    src = render(cfg)
    assert read_config(src) == cfg, "the CONFIG literal round-trips"
    ns: dict = {}
    exec(compile(src, "harness", "exec"), ns)
    ctx = Ctx()
    return ns["solve"]({"text": text}, ctx), ctx.llm, src


def test_each_later_setting_changes_only_what_it_names():
    info = load_task("sentiment").public_info()
    base = make_config(info, mode="score")
    answer, llm, plain = run(base, "a positive film")
    assert answer == "positive" and llm.scored[0][1] == ["positive", "negative"]
    assert "clip(" not in plain and "with_demos" not in plain and "ensemble" not in plain

    words = make_config(info, mode="score", label_words={"positive": "Great", "negative": "Awful"})
    answer, llm, _ = run(words, "great, not awful, great")
    assert llm.scored[0][1] == ["Great", "Awful"] and answer == "positive", "the word is scored, the label is answered"

    cal = make_config(info, mode="score", calibrate=True, calibrate_inputs=("N/A", "", "[MASK]"))
    _, llm, _ = run(cal, "positive")
    assert len(llm.scored) == 4 and "[MASK]" in llm.scored[-1][0], "one prompt for the input, one per content-free input"

    ens = make_config(info, mode="score", calibrate=True, ensemble=("Rate this review: positive or negative?",))
    _, llm, _ = run(ens, "positive")
    assert len(llm.scored) == 4, "two prompts for the input and two for the content-free input"
    assert sum("Rate this review" in p for p, _ in llm.scored) == 2

    first = make_config(info, mode="score", input_first=True)
    _, llm, _ = run(first, "the input")
    assert llm.chats[0][-1]["content"].startswith("the input\n\n")

    demos = (Demo("a fine film", "positive"), Demo("a dull film", "negative"))
    turns = make_config(info, mode="score", demos=demos)
    _, llm, _ = run(turns, "x")
    assert [m["role"] for m in llm.chats[0]] == ["user", "assistant", "user", "assistant", "user"]
    inline = make_config(info, mode="score", demos=demos, demo_layout="inline")
    _, llm, _ = run(inline, "x")
    (user,) = llm.chats[0]
    assert "Example: a fine film\nAnswer: positive" in user["content"] and user["content"].endswith("Now this one: x")

    clipped = make_config(info, max_input_chars=60)
    src = render(clipped)
    ns: dict = {}
    exec(compile(src, "harness", "exec"), ns)
    long = "start " + "middle " * 50 + "end"
    shown = ns["format_input"]({"text": long})
    assert len(shown) <= 60 + len(" [...] ") and shown.startswith("start") and shown.endswith("end") and " [...] " in shown
    assert ns["format_input"]({"text": "short"}) == "short"


def test_similar_demonstrations_are_chosen_per_input_from_the_policy_embeddings():
    info = load_task("sentiment").public_info()
    pool = (Demo("a fine film", "positive"), Demo("a dull book", "negative"), Demo("a loud quiet film", "positive"),
            Demo("a dull film", "negative"))
    cfg = make_config(info, mode="score", calibrate=True, demos=pool, demo_layout="inline", similar_demos=2)
    answer, llm, src = run(cfg, "a dull dull book")
    assert llm.embedded == [d.input for d in pool] + ["a dull dull book"], "one call embeds the pool and the input"
    user = llm.chats[0][-1]["content"]
    assert "a dull book" in user and "a dull film" in user and "a fine film" not in user and "loud" not in user
    assert user.index("a dull film") < user.index("a dull book"), "the nearest is shown last, just before the input"
    assert llm.chats[1][-1]["content"].count("Example:") == 2, "calibration sees the same demonstrations"
    plain = make_config(info, mode="score", demos=pool, demo_layout="inline")
    assert "choose_demos" not in render(plain) and "choose_demos(ctx, example)" in src
    _, llm, _ = run(cfg, "a dull book")
    assert "Example: a dull book" not in llm.chats[0][-1]["content"], "an input in the pool is not shown to itself"
    turns = make_config(info, mode="score", demos=pool, similar_demos=1)
    _, llm, _ = run(turns, "a fine fine film")
    assert [m["role"] for m in llm.chats[0]] == ["user", "assistant", "user"] and "a fine film" in llm.chats[0][0]["content"]
