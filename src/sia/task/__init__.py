"""Tasks: `task.toml` specs, loading and splits, the builtin graders, and the builtin task folders (`builtin/`).

May import errors and paths only.
"""
