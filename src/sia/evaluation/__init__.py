"""Running and reading evaluations: the executor (rollouts into the store), the analysis of train rollouts, intervals.

May import harness, policy, store, task.
"""
