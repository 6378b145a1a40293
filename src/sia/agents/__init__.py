"""Feedback-Agents (the contract, the builtin one, the LLM one), the Meta-Agent, their evidence and model clients.

May import weights, evaluation, harness, policy, store, task. Prompts are data files in `prompts/`.
"""
