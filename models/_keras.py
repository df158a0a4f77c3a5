"""Training and export shared by the Keras families (convnet, vgg). Imports Keras lazily."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mnistcl.onnx_utils import normalise_io
from models.common import EpochLog, Reporter, TrainClock, TrainData, TrainOutcome, to_float


def checkpoint_steps(steps_per_epoch: int, per_epoch: int) -> set[int]:
    """Batch indices (1-based, within an epoch) after which validation accuracy is checked."""
    per_epoch = max(1, min(per_epoch, steps_per_epoch))
    return {round(steps_per_epoch * (i + 1) / per_epoch) for i in range(per_epoch)}


class KerasModel:
    """A trained Keras model behind the family-independent API in models.common."""
    def __init__(self, family: str, model, outcome: TrainOutcome):
        self.family = family
        self.model = model
        self.outcome = outcome

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = to_float(images) if np.asarray(images).dtype == np.uint8 else np.asarray(images, np.float32)
        return np.asarray(self.model.predict(x, batch_size=1024, verbose=0))

    def param_count(self) -> int:
        return int(self.model.count_params())

    def export(self, directory: Path) -> dict[str, Path]:

        directory.mkdir(parents=True, exist_ok=True)
        native = directory / "model.keras"
        onnx_path = directory / "model.onnx"
        self.model.save(native)
        self.model.export(str(onnx_path), format="onnx", verbose=False)
        normalise_io(onnx_path)
        return {"native": native, "onnx": onnx_path}


def fit(family: str, model, data: TrainData, *, learning_rate: float, batch_size: int, epochs: int,
        reporter: Reporter, checkpoints_per_epoch: int = 4, seed: int = 0) -> KerasModel:
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x, y = to_float(data.x_train), data.y_train.astype("int32")
    xv, yv = to_float(data.x_val), data.y_val.astype("int32")
    steps = int(np.ceil(len(x) / batch_size))
    checks = checkpoint_steps(steps, checkpoints_per_epoch)
    outcome = TrainOutcome()
    clock = TrainClock()

    def val_metrics() -> tuple[float, float]:
        recalibrate_batch_norm(model, x)
        with clock.evaluating():
            p = (keras.ops.convert_to_numpy(model(xv, training=False)) if len(xv) <= 2048
                 else model.predict(xv, batch_size=1024, verbose=0))
            p = np.clip(p, 1e-7, 1.0)
            return float(-np.log(p[np.arange(len(yv)), yv]).mean()), float((p.argmax(1) == yv).mean())

    def record(acc: float) -> bool:
        outcome.checkpoints.append(acc)
        outcome.checkpoint_seconds.append(clock.elapsed())
        return reporter.checkpoint(len(outcome.checkpoints), acc)

    class Cb(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_i = epoch
            self.t0 = time.perf_counter()
            self.prev_mean = 0.0

        def on_train_batch_end(self, batch, logs=None):
            step = batch + 1
            # Keras logs the running mean over the epoch; recover this batch's own loss.
            mean = float((logs or {}).get("loss", float("nan")))
            loss = step * mean - batch * self.prev_mean
            self.prev_mean = mean
            reporter.progress(self.epoch_i * steps + step, epochs * steps, loss)
            if step in checks and step != steps:  # the epoch end is handled below
                _, acc = val_metrics()
                if record(acc):
                    outcome.pruned = True
                    self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            vloss, vacc = val_metrics()
            log = EpochLog(epoch + 1, float(logs.get("loss", np.nan)), float(logs.get("accuracy", np.nan)),
                           vloss, vacc, time.perf_counter() - self.t0)
            outcome.history.append(log)
            reporter.epoch(log)
            if outcome.pruned:
                return
            if record(vacc) and epoch + 1 < epochs:
                outcome.pruned = True
                self.model.stop_training = True

    clock.start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[Cb()], shuffle=True)
    recalibrate_batch_norm(model, x)
    return KerasModel(family, model, outcome)


def recalibrate_batch_norm(model, x: np.ndarray, n: int = 1024) -> None:
    """Set batch-norm moving statistics from the final weights (one pass, no momentum).

    Moving averages lag the weights; on short runs they still carry the initialisation and
    inference-mode accuracy collapses (see models/torchnet.py for the same fix).
    """
    import keras

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return
    saved = [layer.momentum for layer in bns]
    for layer in bns:
        layer.momentum = 0.0  # moving = this batch's statistics
    try:
        model(x[:n], training=True)
    finally:
        for layer, m in zip(bns, saved, strict=True):
            layer.momentum = m


def train_family(family: str, model, data: TrainData, config, reporter: Reporter, checkpoints_per_epoch: int = 4):
    """Fit a family's freshly built model with the training fields of its config."""
    return fit(family, model, data, learning_rate=config.learning_rate, batch_size=config.batch_size,
               epochs=config.epochs, reporter=reporter, checkpoints_per_epoch=checkpoints_per_epoch, seed=config.seed)


def load_native(path: Path):
    """Load a .keras file safely (no arbitrary code: safe_mode)."""
    import keras

    return keras.saving.load_model(path, safe_mode=True)
