"""`glm-asr serve --ray-replicas`: the same OpenAI contract with two replicas on a local Ray Serve (tox -e ray)."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import scipy.io.wavfile

from glm_asr.serve.limits import Limits
from glm_asr.transcription.presets import demo_clip

pytestmark = pytest.mark.ray


def test_two_replicas_answer_the_contract(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray Serve is the optional `ray-serve` extra (tox -e ray)")
    serve = pytest.importorskip("ray.serve", reason="Ray Serve is the optional `ray-serve` extra (tox -e ray)")
    openai = pytest.importorskip("openai")
    import httpx

    from glm_asr import load_model_and_processor, transcribe_detailed
    from glm_asr.serve.ray_serve import serve_on_ray

    clip = tmp_path / "clip.wav"
    scipy.io.wavfile.write(clip, 16000, demo_clip(3.0))
    with socket.socket() as s:  # a free port on loopback (Ray Serve binds it itself)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve_on_ray({"model_path": None, "random_preset": "small"}, replicas=2, host="127.0.0.1", port=port,
                     limits=Limits(), batch_size=2, max_new_tokens=4, blocking=False)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)

        def ask(_: int) -> str:
            with clip.open("rb") as f:
                return client.audio.transcriptions.create(model="glm-asr-nano-2512", file=f).text
        with ThreadPoolExecutor(4) as pool:
            texts = list(pool.map(ask, range(4)))
        model, processor = load_model_and_processor(None, random_preset="small")
        assert texts == [transcribe_detailed(model, processor, str(clip), chunked=True, max_new_tokens=4)[0].text] * 4
        bad = httpx.post(f"http://127.0.0.1:{port}/v1/audio/transcriptions", files={"file": ("x.wav", b"junk")},
                         data={"model": "glm-asr-nano-2512"}, timeout=60)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "file"
        assert serve.status().applications["glm-asr"].status == "RUNNING"
    finally:
        serve.shutdown()
        ray.shutdown()
