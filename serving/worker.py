"""gunicorn's worker class for the model server's ASGI front (serving/asgi.py): uvicorn's, with
uvicorn's own access log off (the wrapper's gunicorn had none; each logged request cost a log
record the handlers then dropped). Imported by gunicorn in the serving environment only."""

from uvicorn_worker import UvicornWorker


class ModelServerWorker(UvicornWorker):
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "access_log": False}
