"""Continue training a registered model on new data (the retrain flow's fine-tuning strategy).

Works for every family from its native artifact: torchnet from safetensors, the Keras families
from their .keras file. The learning rate is the model's own, halved, so the new data moves
the weights without wiping out what they knew; replaying old data alongside is the caller's job.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from models import _keras, torchnet
from models.common import Reporter, TrainData


def finetune(family: str, native_path: Path, config: dict, data: TrainData, reporter: Reporter, *,
             epochs: int = 5, lr_scale: float = 0.5, seed: int = 0, distill: float = 0.0):
    """A new model (with .export()) trained from ``native_path``'s weights on ``data``.

    ``distill`` > 0 (torchnet): on the replayed rows (``data.replayed``) the loss also pulls toward
    the model's own probabilities before fine-tuning (knowledge distillation, DER++-style), so the
    old digits keep their old answers' shape and not only their labels. The Keras families
    fine-tune without it."""
    if family == "torchnet":

        base = torchnet.load_native(Path(native_path))
        cfg = replace(base.config, epochs=epochs, learning_rate=base.config.learning_rate * lr_scale, seed=seed)
        soft = None
        if distill > 0 and data.replayed is not None and data.replayed.any():
            soft = np.full((len(data.y_train), 10), np.nan, np.float32)
            soft[data.replayed] = base.predict(data.x_train[data.replayed])
        return torchnet.train(data, cfg, reporter, init=base.net.state_dict(), soft_targets=soft, distill=distill)
    if family in ("convnet", "vgg"):

        model = _keras.load_native(Path(native_path))
        lr = float(config.get("learning_rate", 1e-3)) * lr_scale
        return _keras.fit(family, model, data, learning_rate=lr, batch_size=int(config.get("batch_size", 128)),
                          epochs=epochs, reporter=reporter, seed=seed)
    raise ValueError(f"cannot fine-tune family {family!r}: known torchnet, convnet, vgg")
