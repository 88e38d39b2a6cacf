"""A glm-asr service on uvicorn in a thread of the test process, on 127.0.0.1 and a port the kernel picked."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from glm_asr.serve.app import Service
from glm_asr.serve.server import bind, make_server


@contextlib.contextmanager
def live_server(service: Service) -> Iterator[int]:
    """Yields the port once the server answers; stops it, and checks that it stopped, on the way out."""
    sock = bind("127.0.0.1", 0)
    server = make_server(service)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive(), "the server did not stop"
