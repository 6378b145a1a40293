"""GRPO maths by hand, and LoRA training on a tiny randomly initialised model."""

import json
import math

import pytest
import torch

from sia.weights.config import GRPOConfig
from sia.weights.grpo import completion_logprobs, gmts_scores, group_advantages, has_spread, importance_weights, policy_loss, select_tokens


def test_group_advantages_match_hand_computation():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # mean 0.5, population std 0.5
    assert torch.allclose(group_advantages(r), torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-4)
    assert torch.allclose(group_advantages(r, scale_std=False), torch.tensor([0.5, -0.5, -0.5, 0.5]))
    flat = torch.tensor([1.0, 1.0, 1.0])
    assert not has_spread(flat) and torch.equal(group_advantages(flat), torch.zeros(3))


def test_clipped_loss_matches_hand_computation():
    # two sequences, two tokens each; the second token of sequence 2 is padding
    logp_old = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    logp_new = torch.log(torch.tensor([[0.8, 0.5], [0.2, 0.9]]))
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    cfg = GRPOConfig(clip_low=0.2, clip_high=0.2, aggregation="token")
    loss, stats = policy_loss(logp_new, logp_old, adv, mask, cfg)
    # ratios: 1.6 (clipped to 1.2, A=+1), 1.0, 0.4 (A=-1: min(-0.4, -0.8) = -0.8); per-token loss = -min(...)
    per_token = [-min(1.6 * 1, 1.2 * 1), -min(1.0, 1.0), -min(0.4 * -1, 0.8 * -1)]
    assert float(loss) == pytest.approx(sum(per_token) / 3, abs=1e-5)
    assert stats["clip_fraction"] == pytest.approx(2 / 3)
    seq = policy_loss(logp_new, logp_old, adv, mask, GRPOConfig(aggregation="sequence"))[0]
    assert float(seq) == pytest.approx(((per_token[0] + per_token[1]) / 2 + per_token[2]) / 2, abs=1e-5)
    const = policy_loss(logp_new, logp_old, adv, mask, GRPOConfig(aggregation="constant", max_tokens=4))[0]
    assert float(const) == pytest.approx(sum(per_token) / (2 * 4), abs=1e-5)
    # clip-higher lets the positive-advantage token move further: ratio 1.6 clipped at 1.28 instead of 1.2
    dapo = policy_loss(logp_new, logp_old, adv, mask, GRPOConfig(clip_high=0.28))[0]
    assert float(dapo) == pytest.approx((-1.28 + per_token[1] + per_token[2]) / 3, abs=1e-5)


def test_kl_term_is_k3_estimator():
    logp_new = torch.log(torch.tensor([[0.5]]))
    logp_ref = torch.log(torch.tensor([[0.25]]))
    _, stats = policy_loss(logp_new, logp_new.clone(), torch.tensor([0.0]), torch.ones(1, 1), GRPOConfig(kl_coef=0.1), logp_ref)
    d = math.log(0.25) - math.log(0.5)
    assert stats["kl"] == pytest.approx(math.exp(d) - d - 1, abs=1e-6)


def test_token_selection_keeps_the_top_fraction():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    scores = torch.tensor([[0.1, 0.9, 0.5, 9.0], [0.8, 0.2, 9.0, 9.0]])
    kept = select_tokens(mask, scores, 0.4)  # 5 real tokens -> keep 2
    assert kept.tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]
    gm = gmts_scores(torch.log(torch.tensor([[0.9, 0.1]])), torch.tensor([-2.0]))
    assert torch.allclose(gm, torch.tensor([[0.2, 1.8]]))


def test_lora_training_changes_adapter_weights_only():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert lora_before and all("lora_" in n for n in lora_before)
    ids = torch.randint(0, 64, (4, 10))
    attn = torch.ones_like(ids)
    comp = torch.zeros_like(ids, dtype=torch.float)
    comp[:, 6:] = 1
    with torch.no_grad():
        old, _ = completion_logprobs(model, ids, attn, comp)
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        new, _ = completion_logprobs(model, ids, attn, comp)
        loss, _ = policy_loss(new, old, adv, comp, GRPOConfig())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p.detach(), lora_before[n])]
    assert changed, "no adapter weight moved"
    compared = 0
    for k, v in model.get_base_model().state_dict().items():
        key = k.replace(".base_layer", "")
        if "lora_" in k or key not in before:
            continue
        assert torch.equal(v, before[key]), f"base weight {k} changed"
        compared += 1
    assert compared == len(before)
    # the policy moved in the direction of the advantages
    with torch.no_grad():
        new, _ = completion_logprobs(model, ids, attn, comp)
    gain = ((new - old).sum(1) * adv).sum()
    assert float(gain) > 0


def _tiny_model_dir(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    path = tmp_path / "tiny"
    model.save_pretrained(path)
    return path


def _samples():
    from sia.weights.trainer import Sample

    rng = torch.Generator().manual_seed(1)
    out = []
    for g in range(3):
        prompt = torch.randint(1, 64, (6,), generator=rng).tolist()
        for k in range(4):
            comp = [10 + k, 20 + k, 30]
            out.append(Sample(f"ex{g}", prompt, comp, [-4.0] * 3, float(k % 2), "yes" if k % 2 else "no"))
    return out


def test_trainer_saves_a_standard_peft_adapter_and_logs_steps(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from sia.weights.config import TrainConfig
    from sia.weights.trainer import train

    base_dir = _tiny_model_dir(tmp_path)
    result = train(base_dir, _samples(), TrainConfig(steps=3, prompts_per_step=2, lr=1e-2, rank=4, alpha=8), tmp_path / "a1",
                   lineage={"parent": None})
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert len(result.log) == 3 and all({"reward_mean", "reward_std", "loss", "kl", "outputs"} <= set(e) for e in result.log)
    assert result.log[0]["reward_std"] > 0
    meta = json.loads((result.adapter_dir / "sia_training.json").read_text())
    assert meta["config"]["lr"] == 1e-2 and meta["lineage"] == {"parent": None}
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(result.adapter_dir))
    assert any(float(p.abs().sum()) > 0 for n, p in loaded.named_parameters() if "lora_B" in n)


def test_trainer_skips_groups_without_spread_and_sft_raises_likelihood(tmp_path):
    from sia.weights.config import TrainConfig
    from sia.weights.trainer import Sample, train

    base_dir = _tiny_model_dir(tmp_path)
    flat = [Sample("g", [1, 2, 3], [4, 5], [-3.0, -3.0], 1.0, "same") for _ in range(4)]
    r = train(base_dir, flat, TrainConfig(steps=2), tmp_path / "a0")
    assert r.log == [] and "no reward spread" in r.stopped_early
    sft = train(base_dir, _samples(), TrainConfig(algorithm="sft", steps=6, prompts_per_step=3, lr=3e-2, rank=4), tmp_path / "a2")
    assert sft.log[-1]["loss"] < sft.log[0]["loss"]


def test_collapse_is_judged_on_the_models_preferred_answers_not_on_the_data(tmp_path):
    from sia.weights.config import TrainConfig
    from sia.weights.trainer import Sample, answer_key, collapsed, train

    assert collapsed([("positive", "negative")] * 5 + [("positive", "positive")] * 5, 0.95) == "positive"
    assert collapsed([("positive", "positive")] * 10, 0.95) is None, "preferring the answer that is always best is no collapse"
    assert collapsed([("positive", "negative"), ("negative", "negative")] * 5, 0.95) is None
    # one answer in different spellings is one answer: a model that says it every time has collapsed
    assert {answer_key(x) for x in ("Negative", "negative.", " NEGATIVE!\nbecause", "**Negative**")} == {"negative"}
    assert answer_key("") == "" and len(answer_key("x" * 500)) == 80
    base_dir = _tiny_model_dir(tmp_path)
    # two completions per group, the rewarded one alternating across groups; collected outputs all say "positive"
    same = [Sample(f"g{g}", [1, 2, 3 + g], [4 + k, 5], [-3.0, -3.0], float(k == g % 2), "positive") for g in range(4) for k in range(2)]
    r = train(base_dir, same, TrainConfig(steps=4, prompts_per_step=2, collapse_patience=2), tmp_path / "a3")
    assert len(r.log) == 4 and r.stopped_early is None, "collected outputs that agree are not a collapse of the model"
    assert all(sum(e["predicted"].values()) == 2 for e in r.log)


@pytest.mark.parametrize("batch_cost", [48, 0])  # 0: every prompt length its own batch on the shared opening's cache
def test_shared_prompt_forward_equals_the_full_sequence_forward_in_value_and_gradient(tmp_path, monkeypatch, batch_cost):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import sia.weights.grpo as grpo
    from sia.weights.grpo import completion_logprobs, shared_prompt_logprobs

    monkeypatch.setattr(grpo, "SUBBATCH_POSITIONS", batch_cost)
    assert len(grpo._by_length([(1, 2, 3), (1, 2, 3, 4, 5, 6, 7)], 2)) == (1 if batch_cost else 2)

    base = AutoModelForCausalLM.from_pretrained(_tiny_model_dir(tmp_path))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    one_at_a_time = [([1, 2, 3, 4, 5], [6, 7, 8]), ([1, 2, 3, 4, 5], [9, 10]), ([11, 12, 13], [14, 15, 16, 17]),
                     ([1, 2, 3, 4, 5], [6, 20, 21, 22])]
    left_padded = [([1, 2, 3, 4, 5], [6, 7]), ([11, 12, 13], [14]), ([1, 2, 3, 4, 5], [9, 10, 2]), ([11, 12, 13], [15, 16]),
                   ([30, 31, 32, 33], [6, 7])]  # prompts of different lengths with the same group size run as one batch
    opening = [([1, 2, 3, 4, 5], [6, 7]), ([1, 2, 3, 9], [14]), ([1, 2, 3, 4, 5, 6, 7], [9, 10, 2]), ([1, 2, 3, 9], [15, 16]),
               ([1, 2, 3], [6, 7]), ([1, 2, 3, 4, 5, 6, 7], [8])]  # a batch opening alike: [1, 2] runs once, [1, 2, 3] is a whole prompt
    for pairs in (one_at_a_time, left_padded, opening):
        shared, logits, mask = shared_prompt_logprobs(model, pairs)
        L = max(len(p) + len(c) for p, c in pairs)
        ids = torch.zeros((len(pairs), L), dtype=torch.long)
        attn, comp = torch.zeros_like(ids), torch.zeros((len(pairs), L))
        for i, (p, c) in enumerate(pairs):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            attn[i, : len(p) + len(c)] = 1
            comp[i, len(p) : len(p) + len(c)] = 1
        full, _ = completion_logprobs(model, ids, attn, comp)
        for i, (p, c) in enumerate(pairs):
            assert torch.allclose(shared[i, : len(c)], full[i, len(p) : len(p) + len(c)], atol=1e-5)
            assert mask[i].sum() == len(c)
        lora = [p for n, p in model.named_parameters() if "lora_A" in n]
        g_shared = torch.autograd.grad(shared.sum(), lora)
        g_full = torch.autograd.grad(full.sum(), lora)
        for a, b in zip(g_shared, g_full):
            assert torch.allclose(a, b, atol=1e-5)


def test_the_importance_correction_is_exact_when_both_engines_agree_and_capped_when_they_do_not():
    torch.manual_seed(0)
    new = torch.log_softmax(torch.randn(3, 5, 7), -1)[..., 0].requires_grad_(True)
    old = new.detach() + 0.1 * torch.randn(3, 5)
    adv = torch.tensor([1.0, -0.5, 0.3])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    w = importance_weights(old, old.clone(), mask, cap=2.0)
    assert torch.equal(w, torch.ones_like(w)), "the same logprobs from both engines give weights of exactly 1"
    plain, _ = policy_loss(new, old, adv, mask, GRPOConfig())
    corrected, stats = policy_loss(new, old, adv, mask, GRPOConfig(), is_weights=w)
    assert torch.equal(plain, corrected) and stats["is_weight_mean"] == 1.0
    behaviour = old - torch.tensor([[2.0, -1.0, 0.5, 0, 0]] * 3)  # the trainer finds token 0 e^2 times likelier
    w = importance_weights(old, behaviour, mask, cap=2.0)
    assert w[0, 0] == 2.0 and abs(float(w[0, 1]) - math.exp(-1.0)) < 1e-6 and w[0, 3] == 1.0, "capped, exact below the cap, 1 on padding"


def test_lora_layers_puts_the_adapter_on_the_last_layers_only(tmp_path):
    from sia.weights.config import TrainConfig
    from sia.weights.trainer import Trainer, train

    base_dir = _tiny_model_dir(tmp_path)
    t = Trainer(base_dir, TrainConfig(lora_layers=1, rank=4))
    names = [n for n, p in t.model.named_parameters() if p.requires_grad]
    assert names and all(".layers.1." in n for n in names)
    r = train(base_dir, _samples(), TrainConfig(lora_layers=1, steps=2, prompts_per_step=2, lr=1e-2, rank=4), tmp_path / "a")
    from safetensors.torch import load_file

    keys = load_file(str(r.adapter_dir / "adapter_model.safetensors"))
    assert keys and all(".layers.1." in k for k in keys)


def test_the_seed_picks_the_lora_initialisation_and_the_order_and_the_same_seed_repeats_them(tmp_path):
    """A run's seed reaches its weight updates (`update_seed`): two seeds give two adapters, one seed the same adapter."""
    from safetensors.torch import load_file

    from sia.loop.weight_lever import update_seed
    from sia.weights.config import TrainConfig
    from sia.weights.trainer import train

    base_dir = _tiny_model_dir(tmp_path)

    def adapter(seed, name):
        out = train(base_dir, _samples(), TrainConfig(steps=3, prompts_per_step=2, lr=1e-2, rank=4, seed=seed), tmp_path / name)
        return load_file(str(out.adapter_dir / "adapter_model.safetensors"))

    first, again, other = adapter(update_seed(0, 3), "s0"), adapter(update_seed(0, 3), "s0b"), adapter(update_seed(1, 3), "s1")
    assert first.keys() == other.keys() and update_seed(0, 3) != update_seed(1, 3) != update_seed(1, 4)
    assert all(torch.equal(first[k], again[k]) for k in first), "the same seed gives the same adapter"
    assert any(not torch.equal(first[k], other[k]) for k in first), "another seed gives another adapter"
