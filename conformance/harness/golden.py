"""The golden store: golden/manifest.json plus one safetensors file per (model, audio case, dtype).

Files are written only by tools/regenerate_golden.py, all at once: the new tree is built next to golden/ and
swapped in with renames, so a run that fails leaves the old golden/ as it was. Readers check every file's
sha256 against the manifest before trusting a byte of it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load

from glm_asr.io.atomic import replace_directory

ROOT = Path(__file__).resolve().parents[2] / "golden"
MANIFEST = "manifest.json"
FULL = "full"  # golden/full/: the full-size cases, with a manifest of their own (tools/regenerate_golden.py --full)


class GoldenError(ValueError):
    """A golden file is missing, altered, or does not belong to this manifest; the message names it."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_manifest(root: Path = ROOT) -> dict:
    path = root / MANIFEST
    how = "tox -e golden -- --full" if root.name == FULL else "tox -e golden"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise GoldenError(f"{path}: missing; regenerate with `{how}`") from e
    except json.JSONDecodeError as e:
        raise GoldenError(f"{path}: not valid JSON ({e}); regenerate with `{how}`") from e


def read_verified(root: Path, entry: dict) -> bytes:
    """The bytes of a manifest entry's file, after checking its sha256."""
    path = root / entry["path"]
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise GoldenError(f"{path}: listed in {root / MANIFEST} but missing; regenerate with `tox -e golden`") from e
    if sha256(data) != entry["sha256"]:
        raise GoldenError(
            f"{path}: sha256 {sha256(data)[:16]}... does not match the manifest's {entry['sha256'][:16]}...; "
            "golden files are written only by tools/regenerate_golden.py - restore it (git checkout golden/) or regenerate"
        )
    return data


def load_case(root: Path, entry: dict) -> dict[str, torch.Tensor]:
    return load(read_verified(root, entry))


def all_entries(manifest: dict) -> list[dict]:
    """Every {path, sha256} entry of the manifest: tokenizers and cases."""
    return [m["tokenizer"] for m in manifest.get("models", {}).values()] + list(manifest["cases"].values())


def write_tree(root: Path, files: dict[str, bytes], keep: tuple[str, ...] = ()) -> None:
    """Replaces `root` by exactly `files` (relative path -> bytes) and copies of its subfolders `keep`, or
    leaves it untouched on failure."""

    def fill(staging: Path) -> None:
        for name in keep:
            if (root / name).is_dir():
                shutil.copytree(root / name, staging / name)
        for rel, data in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    replace_directory(root, fill)
