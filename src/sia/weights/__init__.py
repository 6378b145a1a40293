"""Weight updates: their settings, the GRPO family's maths, training samples from recorded calls, the LoRA trainer.

May import evaluation, harness, policy, store, task. torch loads only in `grpo` and `trainer`.
"""
