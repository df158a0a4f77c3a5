"""Small helpers shared by tests."""

import os
import signal
import subprocess
import sys
import time


def write_mnist_csv(path, x, y, header=True):
    cols = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    rows = [",".join(map(str, [int(lbl), *img.reshape(-1).tolist()])) for img, lbl in zip(x, y, strict=True)]
    path.write_text((cols + "\n" if header else "") + "\n".join(rows) + "\n")


def kill_when_marked(script: str, args: list[str], marker, timeout: float = 60.0) -> None:
    """Run ``script`` in a new Python process and SIGKILL it once it has written ``marker``."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args, str(marker)])
    try:
        deadline = time.time() + timeout
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "the process never reached the step where it is killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)


def seed_champion(settings, mnist_medium, export_dir):
    """Dataset v1 (3,000 MNIST training digits + 1,000 test) and a small torchnet champion in the
    settings' stores; returns the champion's exported files."""
    import json

    import models.torchnet as tn
    from mnistcl.stores import stores
    from models.common import NullReporter, TrainData

    ds, reg = stores(settings)
    x, y = mnist_medium["train"]
    xt, yt = mnist_medium["test"]
    ds.create({"train": (x, y), "test": (xt[:1000], yt[:1000])}, parent=None, source="test")
    m = tn.train(TrainData(x, y, xt[:300], yt[:300]), tn.Config(epochs=2, channels=8), NullReporter())
    files = m.export(export_dir)
    mv = reg.register(files=files, family="torchnet", config=json.loads(json.dumps(m.config.__dict__)), dataset="v1")
    reg.promote(mv.id, "champion", reason="test")
    return files
