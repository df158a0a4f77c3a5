"""`torchnet`: the team's own PyTorch net and training loop.

Four 3x3 conv layers with batch norm (one at 28x28, two at 14x14, one at 7x7), then one
linear layer over the flattened 7x7 map: 3.7 M multiply-adds per image at the default width. It trains with AdamW under a one-cycle learning
rate schedule (Smith and Topin, 2019), which reaches 99% on MNIST in one or two epochs, and
runs in channels_last layout, measured here 3.5x faster on the CPU than the default layout.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from mnistcl.onnx_utils import normalise_io
from models._keras import checkpoint_steps
from models.common import (
    EpochLog,
    Reporter,
    TrainClock,
    TrainData,
    TrainOutcome,
    positive,
    to_float,
)

FAMILY = "torchnet"


@dataclass
class Config:
    learning_rate: float = 4e-3  # the one-cycle peak; AdamW tolerates it with batch norm
    batch_size: int = 128
    epochs: int = 2
    channels: int = 12  # first-stage width; later stages double it (12: 99% test accuracy in one epoch)
    dropout: float = 0.1
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05  # softer targets: better calibrated confidences for monitoring
    schedule: Literal["onecycle", "constant"] = "onecycle"
    head: Literal["flatten", "gap"] = "flatten"  # a digit's layout matters: keep the 7x7 map
    channels_last: bool = True
    seed: int = 0

    def check(self, name, value):
        if name in ("dropout", "label_smoothing") and not 0.0 <= value < 1.0:
            return "must be in [0, 1)"
        if name == "weight_decay" and value < 0:
            return "must be >= 0"
        if name in ("learning_rate", "batch_size", "epochs", "channels"):
            return positive(name, value)
        return None


def build(config: Config):
    import torch
    from torch import nn

    c = config.channels

    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    class TorchNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                *block(1, c), nn.MaxPool2d(2),  # full resolution only for the cheap first layer
                *block(c, 2 * c), *block(2 * c, 2 * c), nn.MaxPool2d(2),
                *block(2 * c, 4 * c),
            )
            pool = [nn.AdaptiveAvgPool2d(1)] if config.head == "gap" else []
            n_in = 4 * c * (1 if config.head == "gap" else 49)
            self.head = nn.Sequential(*pool, nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(n_in, 10))

        def forward(self, image):  # image: (n, 28, 28) in [0, 1] -> logits (n, 10)
            return self.head(self.features(image.unsqueeze(1)))

    torch.manual_seed(config.seed)
    return TorchNet()


class _Probs:
    """Wraps the logits net so ONNX and predict() return probabilities (the shared contract)."""
    @staticmethod
    def wrap(net):
        import torch

        class WithSoftmax(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, image):
                return torch.softmax(self.net(image), dim=1)

        return WithSoftmax()


class TorchModel:
    def __init__(self, net, config: Config, outcome: TrainOutcome):
        self.family = FAMILY
        self.net = net
        self.config = config
        self.outcome = outcome

    def predict(self, images: np.ndarray) -> np.ndarray:
        import torch

        x = to_float(images) if np.asarray(images).dtype == np.uint8 else np.asarray(images, np.float32)
        self.net.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), 1024):
                out.append(torch.softmax(self.net(torch.from_numpy(x[i : i + 1024])), 1).numpy())
        return np.concatenate(out)

    def param_count(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def export(self, directory: Path) -> dict[str, Path]:
        import torch
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        native = directory / "model.safetensors"
        state = {k: v.contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, native, metadata={"family": FAMILY, "config": json.dumps(asdict(self.config))})
        onnx_path = directory / "model.onnx"
        self.net.eval()
        wrapped = _Probs.wrap(self.net).eval()
        example = torch.zeros(2, 28, 28)
        import warnings

        try:
            # The TorchScript exporter: 0.5 s here against ~7 s for the dynamo exporter, with
            # identical outputs for this plain conv net. Deprecated upstream, hence the fallback.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapped, (example,), str(onnx_path), input_names=["image"],
                                  output_names=["probs"], dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}},
                                  dynamo=False)
        except Exception:  # noqa: BLE001 - any failure of the old path: use the supported one
            torch.onnx.export(
                wrapped, (example,), str(onnx_path), input_names=["image"], output_names=["probs"],
                dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=65536)}},
                dynamo=True, external_data=False, verbose=False,
            )
        normalise_io(onnx_path)
        return {"native": native, "onnx": onnx_path}


def load_native(path: Path) -> TorchModel:
    """Rebuild from safetensors (no pickle): config from the file's metadata, then weights."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    config = Config(**json.loads(meta["config"]))
    net = build(config)
    net.load_state_dict(load_file(str(path)))
    net.eval()
    return TorchModel(net, config, TrainOutcome())


def train(data: TrainData, config: Config, reporter: Reporter, checkpoints_per_epoch: int = 4,
          init: dict | None = None, soft_targets: np.ndarray | None = None, distill: float = 0.0,
          distill_temperature: float = 2.0) -> TorchModel:
    """Train from scratch, or from ``init`` (a state dict of the same architecture: fine-tuning).

    ``soft_targets``: a teacher's probabilities per training image (NaN rows: none); with
    ``distill`` > 0 the loss on those images adds ``distill`` x the KL divergence to them at
    ``distill_temperature`` (knowledge distillation on replayed images, as DER++ does)."""
    import torch
    from torch import nn

    torch.manual_seed(config.seed)
    device = training_device()
    net = build(config)
    if init is not None:
        net.load_state_dict(init)
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    net = net.to(device=device, memory_format=fmt)
    # The whole set fits in memory (60,000 x 784 floats = 188 MB): no loader, no copies per step.
    x = torch.from_numpy(to_float(data.x_train)).to(device)
    y = torch.from_numpy(data.y_train.astype(np.int64)).to(device)
    xv = torch.from_numpy(to_float(data.x_val)).to(device)
    yv = torch.from_numpy(data.y_val.astype(np.int64)).to(device)
    steps = int(np.ceil(len(x) / config.batch_size))
    opt = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.learning_rate, total_steps=steps * config.epochs,
                                                 pct_start=0.25)
             if config.schedule == "onecycle" else None)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    soft = None
    if soft_targets is not None and distill > 0:
        st = np.nan_to_num(np.asarray(soft_targets, np.float32), nan=-1.0)
        soft = torch.from_numpy(st).to(device)
    gen = torch.Generator().manual_seed(config.seed)
    checks = checkpoint_steps(steps, checkpoints_per_epoch)
    outcome = TrainOutcome()
    clock = TrainClock()

    def val_metrics():
        # Batch-norm recalibration is part of producing a usable model, so it counts as training.
        recalibrate_batch_norm(net, x, config.batch_size)
        with clock.evaluating():
            net.eval()
            with torch.inference_mode():
                logits = torch.cat([net(xv[i : i + 2048]) for i in range(0, len(xv), 2048)])
                vloss = float(nn.functional.cross_entropy(logits, yv))
                vacc = float((logits.argmax(1) == yv).float().mean())
            net.train()
        return vloss, vacc

    def record(acc: float) -> bool:
        outcome.checkpoints.append(acc)
        outcome.checkpoint_seconds.append(clock.elapsed())
        return reporter.checkpoint(len(outcome.checkpoints), acc)

    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(len(x), generator=gen).to(device)
        tot_loss, tot_correct, seen = 0.0, 0, 0
        for step in range(1, steps + 1):
            idx = perm[(step - 1) * config.batch_size : step * config.batch_size]
            xb, yb = x[idx], y[idx]
            logits = net(xb)
            loss = loss_fn(logits, yb)
            if soft is not None:
                sb = soft[idx]
                has = sb[:, 0] >= 0
                if bool(has.any()):
                    t = distill_temperature
                    kl = nn.functional.kl_div(torch.log_softmax(logits[has] / t, 1), sb[has].clamp_min(1e-8).pow(1 / t)
                                              .div(sb[has].clamp_min(1e-8).pow(1 / t).sum(1, keepdim=True)),
                                              reduction="batchmean")
                    loss = loss + distill * (t * t) * kl * has.float().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched:
                sched.step()
            # .item() synchronises a GPU; read the loss only when it is reported or summed.
            lv = loss.item()
            tot_loss += lv * len(idx)
            tot_correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            reporter.progress(epoch * steps + step, config.epochs * steps, lv)
            if step in checks and step != steps:
                _, acc = val_metrics()
                if record(acc):
                    outcome.pruned = True
                    break
        vloss, vacc = val_metrics()
        log = EpochLog(epoch + 1, tot_loss / seen, tot_correct / seen, vloss, vacc, time.perf_counter() - t0)
        outcome.history.append(log)
        reporter.epoch(log)
        if outcome.pruned:
            break
        if record(vacc) and epoch + 1 < config.epochs:
            outcome.pruned = True
            break
    recalibrate_batch_norm(net, x, config.batch_size)  # no-op if the last val_metrics() did it
    net.eval()
    return TorchModel(net.to(device="cpu", memory_format=torch.contiguous_format), config, outcome)


def training_device():
    """CUDA when a GPU is visible (the Kubernetes GPU node pool), else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def recalibrate_batch_norm(net, x, batch_size: int, max_batches: int = 20) -> None:
    """Recompute batch-norm statistics with the final weights (a plain average, no momentum).

    Running statistics lag the weights; after a short run (the quick profile has ~30 steps)
    they still carry the random initialisation, and eval-mode accuracy collapses.
    """
    import torch

    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    net.train()
    with torch.no_grad():
        for i in range(0, min(len(x), batch_size * max_batches), batch_size):
            net(x[i : i + batch_size])
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
