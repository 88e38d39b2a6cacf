"""`glm-asr transcribe` over a corpus: inputs expanded (corpus.py), transcribed in batches (bulk.py), each
result written as it completes: a line on stdout, or a record appended to `--output` (JSONL), and with
`--format` a subtitle or text file per input in `--output-dir`. A progress bar (tqdm, the optional
`progress` extra) on a terminal; nothing but results otherwise."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from glm_asr.corpus.batching import FileResult
from glm_asr.corpus.inputs import Item, ResultsFile, expand_inputs
from glm_asr.corpus.subtitles import render


def record(result: FileResult, stop_on_repeat: bool) -> dict[str, Any]:
    """The results file's record of one input (the fields are described in corpus.py)."""
    out: dict[str, Any] = {"audio_filepath": result.item.audio_filepath, "offset": result.item.offset}
    if result.error is not None:
        out["error"] = result.error
    else:
        out.update(duration=result.duration, text=result.text, segments=[asdict(s) for s in result.segments],
                   timings={"read_s": round(result.read_seconds, 4), "model_s": round(result.model_seconds, 4),
                            "real_time_factor": round(result.model_seconds / max(result.duration, 1e-9), 4)})
        if stop_on_repeat:
            out["stopped_on_repeat"] = result.stopped_on_repeat
    return out | result.item.extra


class Progress:
    """A tqdm bar on a terminal: files done, hours of audio done, real-time factor, ETA. Without tqdm, a
    `[n/N] file` line per input on a terminal; nothing when stderr is not a terminal."""

    def __init__(self, total: int, done: int, stream: IO[str] | None = None) -> None:
        stream = stream or sys.stderr  # looked up now: tests and callers replace sys.stderr
        self.stream, self.total, self.n, self.bar = stream, total, done, None
        self.audio, self.started = 0.0, time.perf_counter()
        self.on_terminal = stream.isatty()
        if self.on_terminal:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, initial=done, unit="file", file=stream, dynamic_ncols=True, smoothing=0.1)

    def update(self, result: FileResult) -> None:
        self.n += 1
        self.audio += result.duration
        if self.bar is not None:
            rtf = (time.perf_counter() - self.started) / max(self.audio, 1e-9)
            self.bar.set_postfix_str(f"{self.audio / 3600:.2f} h audio, RTF {rtf:.2f}", refresh=False)
            self.bar.update(1)
        elif self.on_terminal:
            print(f"[{self.n}/{self.total}] {result.item.audio_filepath}", file=self.stream, flush=True)

    def write(self, line: str, file: IO[str]) -> None:
        if self.bar is not None:
            self.bar.write(line, file=file)
        else:
            print(line, file=file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def subtitle_paths(items: list[Item], fmt: str, directory: Path, overwrite: bool) -> dict[str, Path]:
    """Where each input's subtitle file goes: its path under the directory it was found in (or its name),
    with the format's extension and, for a part of a file, its offset; clashing names are numbered."""
    paths, used = {}, set()
    for item in items:
        stem = (item.relative or Path(item.path.name)).with_suffix("")
        name = f"{stem}@{item.offset:g}s" if item.offset else str(stem)
        target, n = directory / f"{name}.{fmt}", 1
        while target in used:
            n += 1
            target = directory / f"{name}-{n}.{fmt}"
        used.add(target)
        if target.resolve() == item.path.resolve():
            raise ValueError(f"{target}: the --format {fmt} file would replace the audio itself; choose another --output-dir")
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass --resume to rewrite the files of inputs not yet recorded, or choose another --output-dir")
        paths[item.key] = target
    return paths


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)  # a kill leaves the old file or the new one, never half of one


@dataclass
class Plan:
    """What a run will do, settled before the model loads, so that a bad argument costs no loading time."""

    items: list[Item]
    todo: list[Item]
    results: ResultsFile | None
    targets: dict[str, Path]


def prepare(args: argparse.Namespace) -> Plan:
    """Expands the inputs, opens the results file (refusing to overwrite one), plans the --format files."""
    items = expand_inputs(args.files)
    if not items:
        raise ValueError(f"no audio in {', '.join(map(str, args.files))}: directories are searched for audio file extensions")
    if args.resume and args.output is None:
        raise ValueError("--resume continues an --output file; give --output too")
    if args.format and args.output_dir is None:
        raise ValueError(f"--format {args.format} writes one file per input into --output-dir DIR; give it")
    if args.stop_on_repeat is not None and args.stop_on_repeat < 2:
        raise ValueError(f"--stop-on-repeat {args.stop_on_repeat}: expected a count of 2 or more repetitions")
    if args.vad and args.chunked:
        raise ValueError("--vad and --chunked both choose where audio is cut; give one")
    if args.vad:
        from glm_asr.longform.vad import model_path

        model_path()  # the missing extra named before the model loads
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: expected 1 or more")
    results = ResultsFile(args.output, args.resume) if args.output is not None else None
    todo = [item for item in items if results is None or item.key not in results.done]
    targets = subtitle_paths(todo, args.format, args.output_dir, args.resume) if args.format else {}
    return Plan(items, todo, results, targets)


def options(args: argparse.Namespace) -> dict[str, Any]:
    """transcribe_items' keyword arguments from the command line."""
    from glm_asr.longform.vad import VadOptions

    return {"max_new_tokens": args.max_new_tokens, "chunked": True if args.chunked else None, "batch_size": args.batch_size,
            "stop_on_repeat": args.stop_on_repeat, "vad": VadOptions() if args.vad else None}


def run(args: argparse.Namespace, plan: Plan, stream: Iterator[FileResult]) -> int:
    """Writes out the results of the plan's inputs as `stream` yields them (from transcribe_items, or from
    ray_corpus.transcribe_items_on_ray); returns 2 if any input failed, else 0."""
    results, targets = plan.results, plan.targets
    progress = Progress(len(plan.items), len(plan.items) - len(plan.todo))
    failed, listing = 0, []
    try:
        for result in stream:
            if result.error is not None:
                failed += 1
                progress.write(f"glm-asr: error: {result.error}", sys.stderr)
            elif args.format:
                _write_text(targets[result.item.key], render(result.segments, args.format))
            if results is not None:
                results.write(record(result, args.stop_on_repeat is not None))
            elif args.json and result.error is None:
                listing.append({"file": result.item.audio_filepath, "text": result.text, "audio_seconds": result.duration,
                                "wall_seconds": result.read_seconds + result.model_seconds,
                                "real_time_factor": (result.read_seconds + result.model_seconds) / max(result.duration, 1e-9),
                                "segments": [asdict(s) for s in result.segments]})
            elif result.error is None:
                progress.write(f"{result.item.audio_filepath}\t{result.text}", sys.stdout)
            progress.update(result)
    finally:
        progress.close()
        if results is not None:
            results.close()
    if args.json and results is None:
        print(json.dumps(listing, ensure_ascii=False, indent=2))
    return 2 if failed else 0
