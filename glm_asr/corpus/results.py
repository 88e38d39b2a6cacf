"""A corpus's results file: one JSON record per input, appended and flushed as each input completes, so a run
that is killed keeps every record it wrote and `--resume` goes on from there.

A record holds `audio_filepath` and `offset` as the input gave them, `real_path` (the file's resolved path:
what `--resume` matches), and then either `duration` (the seconds transcribed), `text`, `segments`,
`timings`, `stopped_on_repeat` and `truncated` (decoding reached the token budget before the end of the
transcript), or `error` when the input failed. A manifest's own fields are kept beside them; one whose name
a record already uses (a reference `text`, the requested `duration`) is kept as `manifest_<name>`.
`--json` prints the same records.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from glm_asr.engine.units import FileResult
from glm_asr.corpus.inputs import Item, input_key


def record(result: FileResult) -> dict[str, Any]:
    """The record of one input, as the results file and `--json` hold it."""
    item = result.item
    out: dict[str, Any] = {"audio_filepath": item.audio_filepath, "real_path": item.real_path, "offset": item.offset}
    if result.error is not None:
        out["error"] = result.error
    else:
        out.update(duration=result.duration, text=result.text, segments=[asdict(s) for s in result.segments],
                   timings={"read_s": round(result.read_seconds, 4), "model_s": round(result.model_seconds, 4),
                            "real_time_factor": round(result.model_seconds / max(result.duration, 1e-9), 4)},
                   stopped_on_repeat=result.stopped_on_repeat, truncated=result.truncated)
    return out | item.extra


def _keys(record: dict[str, Any]) -> list[str]:
    """The keys a stored record answers to: its real path's, and the path as typed (records written before
    real_path existed, resolved from here as well)."""
    name, offset, duration = record.get("audio_filepath"), record.get("offset", 0.0), record.get("manifest_duration")
    if not isinstance(name, str) or not isinstance(offset, (int, float)) or not isinstance(duration, (int, float, type(None))):
        raise ValueError("no audio_filepath string, or a non-numeric offset or manifest_duration")
    real = record.get("real_path")
    return [input_key(real if isinstance(real, str) else os.path.realpath(name), offset, duration), input_key(name, offset, duration)]


class ResultsFile:
    """The JSONL results. A file with records in it is continued only with `resume` (inputs it records are
    skipped; with `retry_failed`, failed ones are transcribed again and their old lines replaced), or replaced
    with `overwrite`, at the first new record; it is never overwritten otherwise."""

    def __init__(self, path: Path, resume: bool = False, overwrite: bool = False, retry_failed: bool = False) -> None:
        if resume and overwrite:
            raise ValueError("--resume continues the results file and --overwrite replaces it: give one of them")
        if retry_failed and not resume:
            raise ValueError("--retry-failed transcribes again the failed inputs of a results file: give --resume too")
        self.path, self.overwrite, self.retry_failed = path, overwrite, retry_failed
        self.done: set[str] = set()  # keys of inputs to skip
        self.failed: dict[str, list[int]] = {}  # key -> line numbers (0-based) of its failed records, when retried
        self.previous = 0  # records already in the file
        self._drop: set[int] = set()  # failed lines that a new record replaces, removed at close
        self._file: IO[str] | None = None
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory; --output names a .jsonl file")
        if path.is_file() and path.stat().st_size and not (resume or overwrite):
            raise FileExistsError(f"{path} exists; pass --resume to continue it (inputs it records are skipped) "
                                  "or --overwrite to replace it, or choose another --output")
        if path.exists() and resume:
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a record cut short by a kill: drop it, its input runs again
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
            data = data[: data.rfind(b"\n") + 1]
        last: dict[str, tuple[int, bool]] = {}  # key -> (line, failed) of its latest record
        for number, line in enumerate(data.decode("utf-8").splitlines()):
            try:
                stored = json.loads(line)
                keys = _keys(stored)
            except (json.JSONDecodeError, AttributeError, ValueError) as e:
                raise ValueError(f"{self.path}:{number + 1}: not a results record ({e}); --resume needs a file this command wrote") from e
            for key in keys:
                if "error" in stored and self.retry_failed:
                    self.failed.setdefault(key, []).append(number)
                last[key] = (number, "error" in stored)
            self.previous += 1
        self.done = {k for k, (_, failed) in last.items() if not (failed and self.retry_failed)}

    def is_done(self, item: Item) -> bool:
        """Whether the file already records `item` (by its real path, or as typed in an older file)."""
        return item.key in self.done or input_key(item.audio_filepath, item.offset, item.duration) in self.done

    def write(self, record: dict[str, Any]) -> None:
        """Appends one record, flushed; a retried input's old failed lines are marked to be replaced."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w" if self.overwrite else "a", encoding="utf-8")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")  # one write of a whole line
        self._file.flush()
        for key in _keys(record):
            self._drop.update(self.failed.get(key, ()))

    def close(self) -> None:
        """Closes the file; with retried inputs, rewrites it without their old failed lines, atomically (a
        kill before this leaves both lines, and the newer one wins when the file is read again)."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        if self._drop:
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            with open(staging, "w", encoding="utf-8") as f:
                f.writelines(line for number, line in enumerate(lines) if number not in self._drop)
                f.flush()
                os.fsync(f.fileno())
            os.replace(staging, self.path)
            self._drop.clear()
