"""The improvement loop: generations, their configuration and budgets, the gate, and the levers.

May import agents, weights, evaluation, harness, policy, store, task (layers below). See docs/architecture.md.
"""
