"""Plugins loaded by path, above every layer: the builtin task folders (`tasks/`) and the zoo's grader files.

A task folder's grader may use any part of sia (the kernel and denoising graders
run agent-written programs with `sia.harness.programs`). These files are read
or loaded by path (`sia.task.loading`), never imported by sia's packages.
"""
