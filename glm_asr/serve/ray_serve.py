"""The same API with replicas on Ray Serve (the `ray` extra with Ray Serve: `pip install 'glm-asr[ray-serve]'`).

Each replica is one Ray actor holding one model and running the very app of app.py (its lifespan loads the
model, starts the scheduler and answers the warm-up request); Ray Serve's proxy spreads requests over the
replicas, so batching happens within each replica. Limits are per replica: a full replica answers 503.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

from glm_asr.serve.limits import Limits

EXTRA = "pip install 'glm-asr[ray-serve]'"


def build_app(model_kwargs: dict[str, Any], limits: Limits, batch_size: int, max_new_tokens: int | None, model_names: tuple[str, ...]):  # noqa: ANN201
    """On a replica: the model loaded and the ASGI app around it."""
    from glm_asr.serve.app import Service, create_app
    from glm_asr.transcription.transcribe import load_model_and_processor

    model, processor = load_model_and_processor(**model_kwargs)
    return create_app(Service(model, processor, limits=limits, batch_size=batch_size, max_new_tokens=max_new_tokens, model_names=model_names))


def serve_on_ray(model_kwargs: dict[str, Any], *, replicas: int, host: str, port: int, address: str | None = None,
                 limits: Limits = Limits(), batch_size: int = 8, max_new_tokens: int | None = None,
                 model_names: tuple[str, ...] = ("glm-asr-nano-2512",), blocking: bool = True) -> None:
    """Starts (or joins, with `address`) a Ray cluster and runs the app with `replicas` replicas at host:port."""
    try:
        import ray
        from ray import serve
    except ImportError as e:
        raise ImportError(f"--ray-replicas needs Ray Serve: {EXTRA}") from e
    if replicas < 1:
        raise ValueError(f"--ray-replicas {replicas}: expected at least 1")
    ray.init(address=address or None, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    serve.start(http_options={"host": host, "port": port})
    gpus = 1.0 if str(model_kwargs.get("device", "cpu")).startswith("cuda") else 0.0
    deployment = serve.deployment(serve.ingress(lambda: build_app(model_kwargs, limits, batch_size, max_new_tokens, model_names))(),
                                  name="glm-asr", num_replicas=replicas, ray_actor_options={"num_gpus": gpus},
                                  max_ongoing_requests=limits.max_queue)
    serve.run(deployment.bind(), name="glm-asr", route_prefix="/")  # returns once every replica has warmed up
    if not blocking:
        return
    print(f"glm-asr serve: ready on http://{host}:{port} with {replicas} Ray Serve replicas (POST /v1/audio/transcriptions)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as Ctrl-C: through the finally below, not around it
    try:
        while True:
            time.sleep(3600)
    finally:  # the replicas, and a local Ray this process started, go with it
        serve.shutdown()
        ray.shutdown()
