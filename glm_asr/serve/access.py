"""The access log: one line per request, on the `glm_asr.access` logger (server.py sends it to stderr)."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS = logging.getLogger("glm_asr.access")


class AccessLog:
    """One log line per request once it is answered (a stream: once it ends; a WebSocket: once it closes):
    client, method and path, status (101: a stream that was accepted), seconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), None

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "websocket.accept":
                status = 101
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            host, port = scope.get("client") or ("-", 0)
            ACCESS.info('%s:%s "%s %s" %s %.3f s', host, port, scope.get("method", "WS"), scope["path"], status or "-",
                        time.perf_counter() - started)
