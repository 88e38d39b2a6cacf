"""Replacing a whole directory so that a reader never sees it half-written."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def replace_directory(target: Path, fill: Callable[[Path], T]) -> T:
    """Runs `fill(staging)` in a fresh directory next to `target`, then swaps it in with two renames; if
    anything fails, `target` is left exactly as it was and the staging directory is removed."""
    staging = target.with_name(f".{target.name}.new-{os.getpid()}")
    retired = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.mkdir()
        result = fill(staging)
        if target.exists():
            target.rename(retired)
        staging.rename(target)
    except BaseException:
        if retired.exists() and not target.exists():
            retired.rename(target)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(retired, ignore_errors=True)
    return result
