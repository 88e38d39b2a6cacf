"""A corpus's inputs: audio files, directories and manifests, each input once.

Inputs are audio files, directories (searched recursively for audio extensions, in sorted order) and JSONL
manifests in NeMo's form: one object per line with `audio_filepath` (relative paths are relative to the
manifest), optional `offset` and `duration` in seconds, and any other fields, which are passed through.

An input is identified by its file's resolved real path (`os.path.realpath`: absolute, symlinks followed)
with its offset and duration, so that the same file named two ways (absolute, relative, through a symlink,
or found again by an overlapping directory) is one input: the first occurrence is kept. The results file
(results.py) uses the same key for `--resume`.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AUDIO_EXTENSIONS = frozenset([
    ".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".webm", ".mp4", ".mkv", ".mka", ".mov", ".wma",
    ".aif", ".aiff", ".amr", ".ac3", ".3gp",
])
MANIFEST_EXTENSIONS = (".jsonl", ".json")
# A record's own fields: a manifest field of the same name is kept as manifest_<name>.
RESULT_FIELDS = ("audio_filepath", "real_path", "offset", "duration", "text", "segments", "timings", "error",
                 "stopped_on_repeat", "truncated")


def input_key(real_path: str, offset: float, duration: float | None) -> str:
    """What identifies an input, in a run and in a results file: a file's real path, offset and duration."""
    return json.dumps([real_path, float(offset), None if duration is None else float(duration)])


@dataclass
class Item:
    """One input: a file, or a manifest entry's part of one."""

    path: Path  # where the audio is read from
    audio_filepath: str  # as the input named it; recorded in the results
    offset: float = 0.0
    duration: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # a manifest entry's other fields, renamed where needed
    relative: Path | None = None  # under the directory it was found in: where its subtitle file goes

    @functools.cached_property  # one lookup per input, however often a run asks
    def real_path(self) -> str:
        """The file's absolute path with every symlink resolved: one name per file, whatever the input typed."""
        return os.path.realpath(self.path)

    @property
    def key(self) -> str:
        """What identifies the input, for deduplication and --resume."""
        return input_key(self.real_path, self.offset, self.duration)


def expand_inputs(paths: list[os.PathLike | str]) -> list[Item]:
    """Files, directories and manifests as a list of items, in the order given (directories sorted), each
    input once: a later name of a file already listed (same real path, offset and duration) is dropped."""
    items: list[Item] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            items += [Item(p, str(p), relative=p.relative_to(path)) for p in found]
        elif path.suffix.lower() in MANIFEST_EXTENSIONS and path.is_file():
            items += read_manifest(path)
        else:  # a missing or unreadable file fails when it is read, with its own error record
            items.append(Item(path, str(path)))
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.key not in seen:
            seen.add(item.key)
            unique.append(item)
    return unique


def read_manifest(path: Path) -> list[Item]:
    """A NeMo-style JSONL manifest's entries as items."""
    items = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not a JSON object ({e.msg}); a manifest has one object per line") from e
            if not isinstance(entry, dict) or not isinstance(entry.get("audio_filepath"), str):
                raise ValueError(f"{where}: no \"audio_filepath\" string; expected e.g. {{\"audio_filepath\": \"a.wav\"}}")
            offset, duration = entry.get("offset", 0.0), entry.get("duration")
            if not isinstance(offset, (int, float)) or offset < 0 or (duration is not None and (not isinstance(duration, (int, float)) or duration <= 0)):
                raise ValueError(f"{where}: offset {offset!r}, duration {duration!r}; expected seconds, offset >= 0, duration > 0")
            name = entry["audio_filepath"]
            audio = Path(name) if os.path.isabs(name) else path.parent / name
            extra = {(f"manifest_{k}" if k in RESULT_FIELDS else k): v for k, v in entry.items() if k not in ("audio_filepath", "offset")}
            items.append(Item(audio, name, float(offset), None if duration is None else float(duration), extra))
    return items
