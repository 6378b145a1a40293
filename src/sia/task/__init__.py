"""Tasks: `task.toml` specs, loading and splits, the builtin graders, and the task zoo (folders in `sia/plugins/tasks/`).

May import errors and paths only.
"""
