"""gunicorn's worker class for the model server's ASGI front (serving/asgi.py): uvicorn's, with

- a cap on a request's head as it arrives. uvicorn's httptools parser has no limit on the
  request line or a header and builds them by concatenation, so one connection sending a header
  of a gigabyte would take the worker's memory and its event loop for minutes; gunicorn refused
  anything over 8 KB. Heads over ``MAX_HEAD_BYTES`` are answered 431 and the connection closed
  while they arrive; under it, serving/asgi.py answers 414 / 431 with gunicorn's exact limits;
- uvicorn's own access log off (the wrapper's gunicorn had none; each request cost a log record
  the handlers then dropped);
- at most ``worker_connections`` requests at once (gunicorn's setting; more are answered 503),
  so a slow prediction log cannot make requests and their images pile up without bound;
- new connections spread evenly over the workers (serving/balance.py): each worker accepts them
  itself, one at a time, when no other holds fewer;
- the standard library's event loop, not uvloop. Within one wake-up uvloop handed the ready
  connections over in no fixed order (half of the pairs reversed, against a test server spending
  2 ms per request), so at 16 digits x 8 clients one request in six waited while another
  connection on its worker was answered twice; the standard loop takes them in the order the
  kernel reports them: 3 in 7,916 (docs/serving.md, bench/results/serve-tail.json).

Both choices can be undone for comparison (bench/serve_tail.py), through the environment the
server starts in: ``MNISTCL_SERVE_LOOP=uvloop`` (default ``asyncio``) and
``MNISTCL_SERVE_BALANCE=false`` (default ``true``: the kernel's spread instead).

Imported by gunicorn in the serving environment only.
"""

import asyncio
import logging
import os
import sys

import orjson
from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from serving import balance
from serving.asgi import LIMIT_FIELD_SIZE, LIMIT_FIELDS, LIMIT_REQUEST_LINE
from serving.edge import status_body

log = logging.getLogger(__name__)

#: The workers' connection counts: made here, in gunicorn's master (it imports the worker class
#: before it forks the workers), so every worker shares it.
TABLE = balance.Table()

#: gunicorn's limits (the request line, 100 header lines with their CRLF) and one read's worth more:
#: counting stops at the read in which the head ends, which may carry the start of the body.
MAX_HEAD_BYTES = LIMIT_REQUEST_LINE + LIMIT_FIELDS * (LIMIT_FIELD_SIZE + 2) + 262144


class HeadLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head past ``MAX_HEAD_BYTES`` as it arrives."""

    #: This worker's place in the connection table (set by BalancedServer; None: not counted).
    seat: balance.Seat | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._in_head, self._head_bytes = True, 0

    def connection_lost(self, exc) -> None:
        try:
            super().connection_lost(exc)
        finally:
            if self.seat is not None:
                self.seat.closed()
                self.seat = None

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True  # the next request's head starts after this one
        super().on_message_complete()

    def _refuse_head(self) -> None:
        msg = orjson.dumps(status_body(f"request header fields too large: more than {MAX_HEAD_BYTES:,} bytes "
                                       "before the body", 431))
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(msg)).encode() + b"\r\nconnection: close\r\n\r\n" + msg)
        self.transport.close()


class BalancedServer(Server):
    """uvicorn's server with :class:`serving.balance.Listener` in place of ``loop.create_server`` on
    gunicorn's sockets; everything else (lifespan, limits, shutdown) is uvicorn's."""

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=[])  # the lifespan and the rest; no listener of its own
        loop, config, seat = asyncio.get_running_loop(), self.config, TABLE.join()

        def protocol_factory():
            return config.http_protocol_class(config=config, server_state=self.server_state,
                                              app_state=self.lifespan.state, _loop=loop)

        self.servers = [balance.Listener(loop, getattr(s, "sock", s), protocol_factory, seat, ssl=config.ssl)
                        for s in sockets or []]


def _setting(env: str, allowed: tuple[str, ...]) -> str:
    """``env``'s value, one of ``allowed`` (the first when unset); a ValueError naming ``env`` otherwise."""
    value = os.environ.get(env, "").strip().lower() or allowed[0]
    if value not in allowed:
        raise ValueError(f"{env} must be {' or '.join(allowed)}, not {os.environ[env]!r}")
    return value


#: The event loop (asyncio: requests in arrival order; uvloop for comparison) and whether new
#: connections are spread over the workers; read where gunicorn loads this class.
LOOP = _setting("MNISTCL_SERVE_LOOP", ("asyncio", "uvloop"))
BALANCE = _setting("MNISTCL_SERVE_BALANCE", ("true", "false")) == "true"


class ModelServerWorker(UvicornWorker):
    # No WebSockets (the server has none to serve; an upgrade would also swap the protocol and
    # its connection would never be given back to the connection table).
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "access_log": False, "loop": LOOP, "ws": "none",
                     "http": "serving.worker:HeadLimitedProtocol"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.limit_concurrency = self.cfg.worker_connections

    async def _serve(self) -> None:
        """UvicornWorker's, with :class:`BalancedServer` (uvicorn's own with MNISTCL_SERVE_BALANCE=false)."""
        self.config.app = self.wsgi
        server = (BalancedServer if BALANCE else Server)(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
