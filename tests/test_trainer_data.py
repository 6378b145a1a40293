"""Training data comes from the policy service's records, and matches what the trainer recomputes."""

import torch

from sia.evaluation.executor import EvalConfig, execute
from sia.weights.grpo import shared_prompt_logprobs
from sia.policy.embedded import embedded_model_dir
from sia.store.store import Store
from sia.task.loading import load_task
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
