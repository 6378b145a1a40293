"""Harnesses: the template and its config, edits, guards and checks, the sandbox, and the client harness code uses.

May import task (and errors, paths, values). Kept light: every rollout process imports `sia.harness.child`.
"""
