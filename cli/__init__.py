"""The ``mnistcl`` command line: ``cli.app`` holds the app and its shared helpers; each module
registers one group of commands on it (importing them here is what registers them).

Imports inside the commands are deliberate: they keep `mnistcl --help` instant, loading
TensorFlow, PyTorch, Prefect or Evidently only for the command that needs them. Everywhere
else the project's own imports sit at the top of the file (tests/architecture)."""

from cli import data, models, monitor, prefect, scenario, serve, train  # noqa: F401
from cli.app import app, run

__all__ = ["app", "run"]
