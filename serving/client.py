"""The one client of the model server's Seldon REST API, for everything that talks to it from the
main environment (the CLI's predict and smoke, the scenario's traffic). The server itself never
imports this module.

    with ModelServer("http://127.0.0.1:9000", feedback_token=settings.feedback_token_value()) as server:
        tags = server.predict(images)          # uint8 (n, 28, 28) -> digits, confidence, request_id, ...
        server.feedback(tags["request_id"], [7, 3])
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

PREDICT = "/api/v1.0/predictions"
FEEDBACK = "/api/v1.0/feedback"
HEALTH = "/health/status"


class ServerError(Exception):
    """The server answered, with an error status: the status and the start of its body."""

    def __init__(self, status: int, text: str):
        super().__init__(f"HTTP {status}: {text[:300]}")
        self.status, self.text = status, text


class ModelServer:
    def __init__(self, url: str, timeout: float = 30.0, *, feedback_token: str | None = None,
                 predict_token: str | None = None):
        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)
        self.tokens = {PREDICT: predict_token, FEEDBACK: feedback_token}

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, body: dict) -> dict[str, Any]:
        token = self.tokens.get(path)
        r = self.http.post(self.url + path, json=body, headers={"Authorization": f"Bearer {token}"} if token else None)
        if r.status_code != 200:
            raise ServerError(r.status_code, r.text)
        return r.json()

    def predict(self, images: np.ndarray) -> dict[str, Any]:
        """One request of ``images`` (a Seldon ``ndarray``); returns the response's tags."""
        return self._post(PREDICT, {"data": {"ndarray": np.asarray(images).tolist()}})["meta"]["tags"]

    def predict_png(self, pngs_base64: list[str]) -> dict[str, Any]:
        """One request of base64 PNG images (``jsonData.png``); returns the response's tags."""
        return self._post(PREDICT, {"jsonData": {"png": pngs_base64}})["meta"]["tags"]

    def feedback(self, request_id: str, truth: list[int]) -> dict[str, Any]:
        """The true labels of an earlier request, by its id."""
        return self._post(FEEDBACK, {"request": {"meta": {"tags": {"request_id": request_id}}},
                                     "truth": {"data": {"ndarray": list(truth)}}})

    def model_version(self) -> str | None:
        """The version the server answers with now (None while it cannot tell)."""
        try:
            body = self.http.get(self.url + HEALTH).json()
        except (httpx.HTTPError, ValueError):
            return None
        return (body.get("jsonData") or body).get("model_version")  # the wrapper nests it in jsonData
