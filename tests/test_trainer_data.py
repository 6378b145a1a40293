"""Training data comes from the policy service's records, and matches what the trainer recomputes."""

import torch

from sia.evaluation.executor import EvalConfig, execute
from sia.policy.embedded import embedded_model_dir
from sia.store.store import Store
from sia.task.loading import load_task
from sia.weights.grpo import shared_prompt_logprobs
from sia.weights.samples import samples_from_store

SAMPLING_HARNESS = '''
def solve(example, ctx):
    reply = ctx.llm.chat([{"role": "user", "content": "Positive or negative? " + example["text"]}],
                         temperature=1.0, max_tokens=6)
    return reply.text.strip().split()[0].lower() if reply.text.strip() else ""
'''


def test_recorded_calls_become_samples_whose_logprobs_the_trainer_reproduces(tiny_task, tmp_path, hf_runtime):
    runtime = hf_runtime
    from transformers import AutoModelForCausalLM

    task = load_task(tiny_task)
    with Store(tmp_path / "run") as store:
        result = execute(task, SAMPLING_HARNESS, store=store, runtime=runtime,
                          config=EvalConfig(split="train", samples=3, concurrency=6))
        samples = samples_from_store(store, result.evaluation_id)
        tok = runtime.local_policy().tokenizer
        labelled = samples_from_store(store, result.evaluation_id, lambda eid, answer: task.grade(task.examples[eid], answer).score,
                                      labels=task.labels, encode=lambda t: tok.encode(t, add_special_tokens=False),
                                      end_ids=[tok.eos_token_id])
    first_calls = {s.group: s.prompt_ids for s in reversed(samples)}
    # ce: each example's prompt once (its 3 rollouts share it), with every label and the end of the turn as candidates
    assert len(labelled) == 4 * len(task.labels) and all(s.absolute for s in labelled)
    for ex in task.split("train"):
        group = [s for s in labelled if s.group == ex.id]
        assert [s.output for s in group] == task.labels and len({tuple(s.prompt_ids) for s in group}) == 1
        assert [s.reward for s in group] == [float(label == ex.target["label"]) for label in task.labels]
        assert all(s.completion_ids[-1] == tok.eos_token_id for s in group)
        assert group[0].prompt_ids == first_calls[ex.id], "the very prompt the harness built"
    assert len(samples) == 12  # 4 train examples x 3 samples, one model call each
    assert {s.group for s in samples} == {e.id for e in task.split("train")}
    for s in samples:
        assert len(s.completion_ids) == len(s.old_logprobs) and s.prompt_ids
    # the behaviour logprobs recorded at sampling time equal the trainer's own forward pass (ratio 1 at step 0)
    model = AutoModelForCausalLM.from_pretrained(str(embedded_model_dir())).eval()
    with torch.inference_mode():
        new, _, mask = shared_prompt_logprobs(model, [(s.prompt_ids, s.completion_ids) for s in samples[:6]])
    for i, s in enumerate(samples[:6]):
        got = new[i, : len(s.completion_ids)]
        assert torch.allclose(got, torch.tensor(s.old_logprobs), atol=2e-3), float((got - torch.tensor(s.old_logprobs)).abs().max())


def test_a_calibrating_harness_gives_label_groups_that_carry_their_content_free_scores(tiny_task, tmp_path, hf_runtime):
    from sia.harness.template import make_config, render

    task = load_task(tiny_task)
    source = render(make_config(task.public_info(), mode="score", calibrate=True))
    with Store(tmp_path / "run") as store:
        result = execute(task, source, store=store, runtime=hf_runtime, config=EvalConfig(split="train", samples=1, concurrency=4))
        samples = samples_from_store(store, result.evaluation_id, lambda eid, answer: task.grade(task.examples[eid], answer).score)
    assert len(samples) == 4 * len(task.labels), "one label group per example; the shared content-free call is no group"
    free_prompts = {s.bias[0][0] for s in samples}
    assert len(free_prompts) == 1 and all(len(s.bias) == 1 for s in samples), "every example's candidates carry the same N/A prompt"
    for s in samples:
        assert s.bias[0][1] == tuple(s.completion_ids), "the same label, scored on the content-free input"
        assert tuple(s.prompt_ids) != s.bias[0][0]


def test_content_free_calls_are_told_apart_when_each_example_shows_its_own_demonstrations(tiny_task, tmp_path, hf_runtime):
    """Demonstrations chosen per input make every content-free prompt different; the input it lacks gives it away."""
    from sia.harness.template import Demo, make_config, render

    task = load_task(tiny_task)
    train = task.split("train")
    pool = tuple(Demo(str(e.inputs["text"]), e.target["label"]) for e in train)
    source = render(make_config(task.public_info(), mode="score", calibrate=True, demos=pool, demo_layout="inline", similar_demos=2))
    with Store(tmp_path / "run") as store:
        result = execute(task, source, store=store, runtime=hf_runtime, config=EvalConfig(split="train", samples=1, concurrency=4))
        samples = samples_from_store(store, result.evaluation_id, lambda eid, answer: task.grade(task.examples[eid], answer).score,
                                     inputs={e.id: str(e.inputs["text"]) for e in train})
    assert len(samples) == len(train) * len(task.labels), "one label group per example, none from its content-free call"
    assert all(len(s.bias) == 1 for s in samples) and len({s.bias[0][0] for s in samples}) == len(train)
    for s in samples:
        e = task.examples[s.group]
        prompt = hf_runtime.service.backend.policy.decode(s.prompt_ids)
        assert prompt.count("Example:") == 2 and "Example: " + str(e.inputs["text"]) not in prompt, "never shown itself"
