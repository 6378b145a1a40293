import json

import pytest

from sia.errors import TaskError
from sia.task.graders import exact_label, option_set_f1, single_choice
from sia.task.loading import Example, builtin_tasks, load_task


def test_builtin_tasks_load_with_fixed_disjoint_splits():
    assert {"sentiment", "lawbench-charges", "lawbench-topics"} <= set(builtin_tasks())
    for name in builtin_tasks():
        task = load_task(name)
        splits = {s: [e.id for e in task.split(s)] for s in ("train", "val", "test")}
        assert all(splits.values()), name
        ids = [i for v in splits.values() for i in v]
        assert len(ids) == len(set(ids)), f"{name}: splits overlap"
        again = load_task(name)
        assert [e.id for e in again.split("val")] == splits["val"], "split must be deterministic"


def test_visible_example_has_no_target():
    task = load_task("sentiment")
    ex = task.split("train")[0]
    vis = ex.visible()
    assert set(vis) == {"id", "text"}
    assert "label" not in json.dumps(vis)
    assert ex.target["label"] in ("positive", "negative")


def test_lawbench_data_is_real_and_labelled():
    charges = load_task("lawbench-charges")
    assert sum(charges.sizes().values()) == 500
    assert len(charges.labels) > 150
    ex = charges.split("val")[0]
    assert ex.target["labels"] and all(c in charges.labels for c in ex.target["labels"])
    topics = load_task("lawbench-topics")
    assert all(e.target["label"] in topics.labels for e in topics.examples.values())


def _ex(target, options=()):
    return Example("x", "val", {"text": "t"}, target, list(options))


def test_exact_label_grades_the_first_line_strictly():
    ex = _ex({"label": "positive"})
    assert exact_label(ex, "Positive.").passed
    assert exact_label(ex, "positive\nnegative").passed
    assert not exact_label(ex, "Positive: good. Negative: bad").passed
    assert not exact_label(ex, "The review is positive").passed
    assert not exact_label(ex, 3).passed


def test_option_set_f1_matches_lawbench():
    opts = ["盗窃", "诈骗", "合同诈骗", "故意伤害"]
    ex = _ex({"labels": ["盗窃", "故意伤害"]}, opts)
    assert option_set_f1(ex, "盗窃;故意伤害").score == pytest.approx(1.0)
    assert option_set_f1(ex, "盗窃").score == pytest.approx(2 / 3)
    assert option_set_f1(ex, "无").score == 0.0
    # as in LawBench, a longer name also credits the names it contains
    ex2 = _ex({"labels": ["合同诈骗"]}, opts)
    assert option_set_f1(ex2, "合同诈骗").score == pytest.approx(2 / 3)


def test_single_choice_needs_exactly_the_gold_option():
    ex = _ex({"label": "侵权"}, ["侵权", "公司法"])
    assert single_choice(ex, "侵权").passed
    assert not single_choice(ex, "侵权 或 公司法").passed


def test_bad_task_folders_raise_one_clear_error(tmp_path):
    with pytest.raises(TaskError, match="not found"):
        load_task(tmp_path / "nope")
    (tmp_path / "t").mkdir()
    with pytest.raises(TaskError, match="no task.toml"):
        load_task(tmp_path / "t")
    (tmp_path / "t" / "task.toml").write_text("name = [unclosed")
    with pytest.raises(TaskError, match="malformed TOML"):
        load_task(tmp_path / "t")
    (tmp_path / "t" / "task.toml").write_text('name = "t"\ndescription = "d"\n')
    with pytest.raises(TaskError, match="grader"):
        load_task(tmp_path / "t")


def test_a_task_written_against_old_grader_names_still_checks_and_grades_with_a_note(tmp_path):
    """`sia.grader:exact_label` is how task folders named the label grader before graders moved to `sia.task.graders`."""
    import subprocess

    from conftest import SIA

    from sia.task.loading import load_task
    from sia.task.scaffold import new_task

    folder = new_task(tmp_path / "old-names", False)
    toml = (folder / "task.toml").read_text()
    (folder / "task.toml").write_text(toml.replace('entry = "sia.task.graders:', 'entry = "sia.grader:'))
    old = next(line for line in (folder / "task.toml").read_text().splitlines() if line.startswith("entry"))
    assert "sia.grader:" in old
    r = subprocess.run([SIA, "task", "check", str(folder)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "the task is ready" in r.stdout, r.stdout + r.stderr
    assert "note deprecated name: grader entry 'sia.grader:" in " ".join(r.stdout.split())
    task = load_task(folder)
    ex = task.split("train")[0]
    gold = task.grader.gold if hasattr(task.grader, "gold") else task.grader.func.gold
    assert task.grade(ex, gold(ex)).score == 1.0 and len(task.deprecations) == 1
