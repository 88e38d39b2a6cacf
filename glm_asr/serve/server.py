"""Running the app on uvicorn: the socket bound before the model loads (so the port is known, `--port 0`
included), ready reported only after the warm-up request, and SIGTERM draining: new requests get 503 at
once while the ones in flight are finished and answered, then the process exits."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable

from glm_asr.serve.app import Service, create_app

EXTRA = "pip install 'glm-asr[serve]'"


def import_uvicorn():  # noqa: ANN201
    try:
        import uvicorn
    except ImportError as e:
        raise ImportError(f"glm-asr serve runs on uvicorn, which is not installed: {EXTRA}") from e
    return uvicorn


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: uvicorn's h11 protocol writes a response's head and body apart, and with
    # Nagle's algorithm the body then waits for the client's delayed ACK, 40 ms on every keep-alive request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); choose a free port, or 0 for any") from e
    sock.listen(2048)
    return sock


def make_server(service: Service, *, drain_seconds: float = 300.0, on_ready: Callable[[], None] | None = None, log_level: str = "warning"):  # noqa: ANN201
    """A uvicorn Server for the app, whose exit signal first turns the service to draining."""
    uvicorn = import_uvicorn()

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:  # noqa: ANN001
            service.draining = True  # new requests: 503 from now on; uvicorn then waits for those in flight
            # uvicorn's tasks are the requests it waits for: the scheduler's jobs miss those still uploading.
            print(f"glm-asr serve: draining {len(self.server_state.tasks)} requests in flight, taking no new ones", file=sys.stderr, flush=True)
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and on_ready is not None:
                on_ready()

    access = logging.getLogger("glm_asr.access")  # the app's own line per request (app.AccessLog), on stderr
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("glm-asr serve: %(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
    config = uvicorn.Config(create_app(service), log_level=log_level, timeout_graceful_shutdown=drain_seconds,
                            access_log=False, lifespan="on")
    return Server(config)


def serve(service: Service, host: str, port: int, *, drain_seconds: float = 300.0) -> None:
    """Serves until SIGTERM or SIGINT, then drains."""
    sock = bind(host, port)
    address = sock.getsockname()

    def ready() -> None:
        print(f"glm-asr serve: ready on http://{host}:{address[1]} (POST /v1/audio/transcriptions; live: the page at /, "
              f"ws://{host}:{address[1]}/v1/realtime, {service.realtime.reason})", flush=True)

    try:  # after a signal, uvicorn raises it again once drained: the exit status says what stopped the server
        make_server(service, drain_seconds=drain_seconds, on_ready=ready).run(sockets=[sock])
    finally:
        sock.close()
