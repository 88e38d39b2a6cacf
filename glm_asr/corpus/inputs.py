"""A corpus's inputs and its results file.

Inputs are audio files, directories (searched recursively for audio extensions, in sorted order) and JSONL
manifests in NeMo's form: one object per line with `audio_filepath` (relative paths are relative to the
manifest), optional `offset` and `duration` in seconds, and any other fields, which are passed through.

Results are JSONL too, one record per input, appended and flushed as each input completes, so a run that is
killed keeps every record it wrote and `--resume` goes on from there. A record holds `audio_filepath` and
`offset` as the input gave them, `duration` (the seconds transcribed), `text`, `segments`, `timings`, and
`error` instead of a transcript when the input failed. A manifest's own fields are kept beside them; one
whose name a record already uses (a reference `text`, the requested `duration`) is kept as `manifest_<name>`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

AUDIO_EXTENSIONS = frozenset([
    ".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".webm", ".mp4", ".mkv", ".mka", ".mov", ".wma",
    ".aif", ".aiff", ".amr", ".ac3", ".3gp",
])
MANIFEST_EXTENSIONS = (".jsonl", ".json")
RESULT_FIELDS = ("audio_filepath", "offset", "duration", "text", "segments", "timings", "error", "stopped_on_repeat")


@dataclass
class Item:
    """One input: a file, or a manifest entry's part of one."""

    path: Path  # where the audio is read from
    audio_filepath: str  # as the input named it; recorded in the results
    offset: float = 0.0
    duration: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # a manifest entry's other fields, renamed where needed
    relative: Path | None = None  # under the directory it was found in: where its subtitle file goes

    @property
    def key(self) -> str:
        """What identifies the input in a results file, for --resume."""
        return json.dumps([self.audio_filepath, self.offset, self.duration])  # a manifest duration is recorded as manifest_duration


def expand_inputs(paths: list[Path]) -> list[Item]:
    """Files, directories and manifests as a list of items, in the order given (directories sorted)."""
    items: list[Item] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            items += [Item(p, str(p), relative=p.relative_to(path)) for p in found]
        elif path.suffix.lower() in MANIFEST_EXTENSIONS and path.is_file():
            items += read_manifest(path)
        else:  # a missing or unreadable file fails when it is read, with its own error record
            items.append(Item(path, str(path)))
    return items


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


def record_key(record: dict[str, Any]) -> str:
    return json.dumps([record.get("audio_filepath"), record.get("offset", 0.0), record.get("manifest_duration")])


class ResultsFile:
    """The JSONL results, appended to. A file with records in it is continued only with `resume` (its keys are
    read, to be skipped), never overwritten; it is created at the first record."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path, self.done = path, set()
        self._file: IO[str] | None = None
        if path.is_file() and path.stat().st_size and not resume:
            raise FileExistsError(f"{path} exists; pass --resume to continue it (inputs it records are skipped), or choose another --output")
        if path.exists():
            self.done = self._read_keys()

    def _read_keys(self) -> set[str]:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a record cut short by a kill: drop it, its input runs again
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
            data = data[: data.rfind(b"\n") + 1]
        keys = set()
        for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
            try:
                keys.add(record_key(json.loads(line)))
            except (json.JSONDecodeError, AttributeError) as e:
                raise ValueError(f"{self.path}:{number}: not a results record; --resume needs a file this command wrote") from e
        return keys

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")  # one write of a whole line
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
