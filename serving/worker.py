"""gunicorn's worker class for the model server's ASGI front (serving/asgi.py): uvicorn's, with

- a cap on a request's head as it arrives. uvicorn's httptools parser has no limit on the
  request line or a header and builds them by concatenation, so one connection sending a header
  of a gigabyte would take the worker's memory and its event loop for minutes; gunicorn refused
  anything over 8 KB. Heads over ``MAX_HEAD_BYTES`` are answered 431 and the connection closed
  while they arrive; under it, serving/asgi.py answers 414 / 431 with gunicorn's exact limits;
- uvicorn's own access log off (the wrapper's gunicorn had none; each request cost a log record
  the handlers then dropped);
- at most ``worker_connections`` requests at once (gunicorn's setting; more are answered 503),
  so a slow prediction log cannot make requests and their images pile up without bound.

Imported by gunicorn in the serving environment only.
"""

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from serving.asgi import LIMIT_FIELD_SIZE, LIMIT_FIELDS, LIMIT_REQUEST_LINE
from serving.edge import status_body

#: gunicorn's limits (the request line, 100 header lines with their CRLF) and one read's worth more:
#: counting stops at the read in which the head ends, which may carry the start of the body.
MAX_HEAD_BYTES = LIMIT_REQUEST_LINE + LIMIT_FIELDS * (LIMIT_FIELD_SIZE + 2) + 262144


class HeadLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head past ``MAX_HEAD_BYTES`` as it arrives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._in_head, self._head_bytes = True, 0

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


class ModelServerWorker(UvicornWorker):
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "access_log": False,
                     "http": "serving.worker:HeadLimitedProtocol"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.limit_concurrency = self.cfg.worker_connections
