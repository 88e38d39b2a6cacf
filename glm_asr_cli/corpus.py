"""`glm-asr transcribe` over a corpus: inputs expanded (glm_asr/corpus/inputs.py), transcribed in batches
(batching.py), each result written as it completes: a line on stdout (`--json`: the results file's record),
a record appended to `--output` (JSONL, results.py), and with `--format` a subtitle or text file per input
in `--output-dir`. A progress bar (tqdm, the optional `progress` extra) on a terminal; then one summary line
on stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from glm_asr.engine.units import FileResult
from glm_asr.corpus.inputs import Item, expand_inputs
from glm_asr.corpus.results import ResultsFile, record
from glm_asr.corpus.subtitles import render


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


def subtitle_paths(items: list[Item], fmt: str, directory: Path, replace: bool, resumable: bool = False) -> dict[str, Path]:
    """Where each input's subtitle file goes: its path under the directory it was found in (or its name),
    with the format's extension and, for a part of a file, its offset; clashing names are numbered. An
    existing file is replaced only when `replace` (--overwrite, or --resume's inputs not yet recorded)."""
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
        if target.exists() and not replace:
            resume = ", --resume to continue the run that wrote it (with its --output)" if resumable else ""
            raise FileExistsError(f"{target} exists; pass --overwrite to replace it{resume}, or choose another --output-dir")
        paths[item.key] = target
    return paths


def check_writable(path: Path, flag: str) -> None:
    """Refuses, before the model loads, an output path that cannot be written: under a file, or read-only."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if (existing != path or flag == "--output-dir") and existing.exists() and not existing.is_dir():
        raise ValueError(f"{flag} {path}: {existing} is a file, not a folder; choose a writable path")
    if not os.access(existing, os.W_OK) or (existing.is_dir() and not os.access(existing, os.X_OK)):
        raise ValueError(f"{flag} {path}: {existing} is not writable (permission denied); choose a writable path")


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
    """Checks the flags, expands the inputs, opens the results file (refusing to overwrite one without
    --overwrite), plans the --format files."""
    if args.resume and args.output is None:
        raise ValueError("--resume continues an --output file; give --output too")
    if args.retry_failed and not args.resume:
        raise ValueError("--retry-failed transcribes again the failed inputs of an --output file: give --resume and --output too")
    if args.overwrite and args.resume:
        raise ValueError("--resume continues the --output file and --overwrite replaces it: give one of them")
    if args.overwrite and args.output is None and args.format is None:
        raise ValueError("--overwrite replaces an existing --output file or --format files; give --output or --format")
    if args.format and args.output_dir is None:
        raise ValueError(f"--format {args.format} writes one file per input into --output-dir DIR; give it")
    if args.output_dir is not None and args.format is None:
        raise ValueError(f"--output-dir {args.output_dir} holds the --format files; give --format srt, vtt or txt too")
    if args.ray_actors is not None and args.ray is None:
        raise ValueError(f"--ray-actors {args.ray_actors} sets the actors of a --ray run; give --ray too")
    if args.ray_actors is not None and args.ray_actors < 1:
        raise ValueError(f"--ray-actors {args.ray_actors}: expected 1 or more")
    if args.stop_on_repeat is not None and args.stop_on_repeat < 2:
        raise ValueError(f"--stop-on-repeat {args.stop_on_repeat}: expected a count of 2 or more repetitions")
    if args.vad and args.chunked:
        raise ValueError("--vad and --chunked both choose where audio is cut; give one")
    vad_options(args)  # a bad --vad-* value named before anything runs
    if args.vad:
        from glm_asr.longform.vad import model_path

        model_path()  # the missing extra named before the model loads
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: expected 1 or more")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens}: expected 1 or more (leave it out for a budget that follows each file's length)")
    for path, flag in ((args.output, "--output"), (args.output_dir, "--output-dir")):
        if path is not None:
            check_writable(path, flag)
    items = expand_inputs(args.files)
    if not items:
        raise ValueError(f"no audio in {', '.join(map(str, args.files))}: directories are searched for audio file extensions")
    results = ResultsFile(args.output, args.resume, args.overwrite, args.retry_failed) if args.output is not None else None
    todo = [item for item in items if results is None or not results.is_done(item)]
    targets = subtitle_paths(todo, args.format, args.output_dir, args.resume or args.overwrite, args.output is not None) if args.format else {}
    return Plan(items, todo, results, targets)


VAD_FLAGS = {"threshold": "--vad-threshold", "neg_threshold": "--vad-neg-threshold", "min_speech_duration_ms": "--vad-min-speech-ms",
             "min_silence_duration_ms": "--vad-min-silence-ms", "speech_pad_ms": "--vad-pad-ms", "max_gain": "--vad-max-gain",
             "max_gap_s": "--vad-max-gap", "max_piece_s": "--vad-max-piece"}


def vad_options(args: argparse.Namespace) -> Any:  # noqa: ANN401 (VadOptions | None; imported lazily)
    """VadOptions from --vad and the --vad-* flags; a flag without --vad, or a bad value, is a ValueError naming it."""
    from glm_asr.longform.vad import VadOptions

    given = {field: getattr(args, flag[2:].replace("-", "_")) for field, flag in VAD_FLAGS.items()
             if getattr(args, flag[2:].replace("-", "_"), None) is not None}
    if given and not args.vad:
        raise ValueError(f"{VAD_FLAGS[next(iter(given))]} tunes --vad; give --vad too")
    if not args.vad:
        return None
    if "threshold" in given and "neg_threshold" not in given and given["threshold"] <= VadOptions.neg_threshold:
        given["neg_threshold"] = max(round(given["threshold"] - 0.2, 4), 0.01)  # kept under the threshold, as server_vad does
    try:
        return VadOptions(**given)
    except ValueError as e:
        raise ValueError(f"{e} ({', '.join(VAD_FLAGS[k] for k in given)})") from e


def options(args: argparse.Namespace) -> dict[str, Any]:
    """transcribe_items' keyword arguments from the command line."""
    return {"max_new_tokens": args.max_new_tokens, "chunked": True if args.chunked else None, "batch_size": args.batch_size,
            "stop_on_repeat": args.stop_on_repeat, "vad": vad_options(args)}


def run(args: argparse.Namespace, plan: Plan, stream: Iterator[FileResult]) -> int:
    """Writes out the results of the plan's inputs as `stream` yields them (from transcribe_items, or from
    ray_cluster.transcribe_items_on_ray), then a summary line on stderr; returns 2 if any input failed, else 0."""
    results, targets = plan.results, plan.targets
    progress = Progress(len(plan.items), len(plan.items) - len(plan.todo))
    done, failed, truncated = 0, 0, 0
    try:
        for result in stream:
            if result.error is not None:
                failed += 1
                progress.write(f"glm-asr: error: {result.error}", sys.stderr)
            else:
                done += 1
                if args.format:
                    _write_text(targets[result.item.key], render(result.segments, args.format))
                if result.truncated:
                    truncated += 1
                    progress.write(f"glm-asr: warning: {result.item.audio_filepath}: decoding reached its token budget, so the "
                                   "transcript may stop before the speech does; raise --max-new-tokens or use --chunked", sys.stderr)
            line = record(result)
            if results is not None:
                results.write(line)
            if args.json:
                progress.write(json.dumps(line, ensure_ascii=False), sys.stdout)
            elif results is None and result.error is None:
                progress.write(f"{result.item.audio_filepath}\t{result.text}", sys.stdout)
            progress.update(result)
    finally:
        progress.close()
        if results is not None:
            results.close()
    where = f" to {args.output}" if results is not None else ""
    skipped = len(plan.items) - len(plan.todo)
    print(f"glm-asr: {done + failed} records written{where}: {done} transcribed, {failed} failed, {truncated} truncated; "
          f"{skipped} skipped (already recorded)", file=sys.stderr, flush=True)
    return 2 if failed else 0
