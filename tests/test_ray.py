"""`glm-asr transcribe --ray` on a local Ray instance with the small preset: the same records as the local run
for the same inputs, and a failing file recorded, not fatal (tox -e ray)."""

import json

import pytest
import scipy.io.wavfile

from glm_asr_cli import main
from glm_asr.transcription.presets import demo_clip

pytestmark = pytest.mark.ray


def test_ray_run_writes_the_local_records(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is the optional `ray` extra (tox -e ray)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(5):
        scipy.io.wavfile.write(corpus / f"clip{i}.wav", 16000, demo_clip(1.0 + i, seed=i))
    (corpus / "broken.mp3").write_bytes(b"not audio")
    common = ["transcribe", str(corpus), "--random", "small", "--max-new-tokens", "4", "--batch-size", "2"]
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert main([*common, "--output", str(local)]) == 2  # the broken file
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main([*common, "--output", str(on_ray), "--ray", "--ray-actors", "2"]) == 2
    finally:
        ray.shutdown()

    def comparable(path):  # noqa: ANN001, ANN202 (timings differ run to run)
        records = [json.loads(line) for line in path.read_text().splitlines()]
        return sorted(({k: v for k, v in r.items() if k != "timings"} for r in records), key=lambda r: r["audio_filepath"])

    expected = comparable(local)
    assert comparable(on_ray) == expected and len(expected) == 6
    assert sum("error" in r for r in expected) == 1 and "broken.mp3" in next(r["error"] for r in expected if "error" in r)
