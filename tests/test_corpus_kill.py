"""A real `glm-asr transcribe --output` run killed with SIGKILL mid-corpus, then resumed: exactly one record
per input, and the transcripts of a run that was never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import scipy.io.wavfile

from glm_asr_cli import main
from glm_asr.transcription.presets import demo_clip

FILES = 8


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_killed_run_resumes_to_one_record_per_input(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    for i in range(FILES):
        scipy.io.wavfile.write(corpus / ("sub" if i % 3 == 0 else "") / f"clip{i:02d}.wav", 16000, demo_clip(1.0 + i % 4, seed=i))
    common = ["transcribe", str(corpus), "--random", "small", "--max-new-tokens", "2", "--batch-size", "2"]
    out = tmp_path / "results.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "glm_asr_cli", *common, "--output", str(out)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while (not out.exists() or out.read_text().count("\n") < 2) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL, run.stderr.read().decode()
    written = out.read_text().count("\n")
    assert 2 <= written < FILES  # killed mid-corpus

    assert main([*common, "--output", str(out), "--resume"]) == 0
    reference = tmp_path / "uninterrupted.jsonl"
    assert main([*common, "--output", str(reference)]) == 0
    resumed, expected = records(out), records(reference)
    assert sorted(r["audio_filepath"] for r in resumed) == sorted(r["audio_filepath"] for r in expected)
    assert len(resumed) == len({r["audio_filepath"] for r in resumed}) == FILES
    text = {r["audio_filepath"]: (r["text"], r["segments"]) for r in expected}
    assert all(text[r["audio_filepath"]] == (r["text"], r["segments"]) for r in resumed)
