"""The run store: SQLite and git, typed records, the `Run` facade, design memory, the run summary and report.

May import task. All SQL of sia is in `store.py`.
"""
