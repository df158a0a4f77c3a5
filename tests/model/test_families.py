"""Behaviour of every model family on a few hundred real digits."""

import numpy as np
import onnxruntime as ort
import pytest

from models.common import TrainData
from models.search import family_module

pytestmark = pytest.mark.model

FAMILIES = ["convnet", "vgg", "torchnet"]


class Recorder:
    def __init__(self):
        self.losses = []

    def progress(self, step, total, loss):
        self.losses.append(loss)

    def checkpoint(self, index, val_accuracy):
        return False

    def epoch(self, log):
        pass


@pytest.fixture(scope="module")
def tiny(mnist_small):
    x, y = mnist_small["train"]
    xt, yt = mnist_small["test"]
    return TrainData(x[:400], y[:400], xt[:100], yt[:100])


@pytest.fixture(scope="module")
def trained(tiny):
    out = {}
    for fam in FAMILIES:
        mod = family_module(fam)
        rec = Recorder()
        model = mod.train(tiny, mod.Config(epochs=1, batch_size=16, learning_rate=3e-3), rec)
        out[fam] = (model, rec)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_falls_in_one_epoch(trained, family):
    _, rec = trained[family]
    q = max(len(rec.losses) // 4, 1)
    first, last = np.mean(rec.losses[:q]), np.mean(rec.losses[-q:])
    assert len(rec.losses) == 25
    assert last < 0.85 * first, f"{family}: loss went from {first:.3f} to {last:.3f}"


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_and_native_agree(trained, tiny, tmp_path, family):
    model, _ = trained[family]
    files = model.export(tmp_path)
    assert files["onnx"].stat().st_size > 1000 and files["native"].exists()
    sess = ort.InferenceSession(str(files["onnx"]))
    assert [i.name for i in sess.get_inputs()] == ["image"]
    assert [o.name for o in sess.get_outputs()] == ["probs"]
    x = tiny.x_val[:64]
    p_onnx = sess.run(["probs"], {"image": x.astype(np.float32) / 255})[0]
    p_native = model.predict(x)
    assert p_onnx.shape == (64, 10)
    np.testing.assert_allclose(p_onnx.sum(1), 1.0, atol=1e-4)
    np.testing.assert_allclose(p_onnx, p_native, atol=1e-4)
    # the native file loads back (without pickle) to the same predictions
    mod = family_module(family)
    if family == "torchnet":
        reloaded = mod.load_native(files["native"])
        p_back = reloaded.predict(x)
    else:
        from models._keras import load_native

        p_back = np.asarray(load_native(files["native"]).predict(x.astype(np.float32) / 255, verbose=0))
    np.testing.assert_allclose(p_back, p_native, atol=1e-5)


def test_convnet_is_the_keras_example():
    import models.convnet as convnet

    assert convnet.build(convnet.Config()).count_params() == 34_826


@pytest.mark.parametrize("family", FAMILIES)
def test_overfits_one_batch(mnist_small, family):
    x, y = mnist_small["train"]
    batch = TrainData(x[:32], y[:32], x[:32], y[:32])
    mod = family_module(family)
    cfg = mod.Config(epochs=40, batch_size=32, dropout=0.0, learning_rate=3e-3)
    model = mod.train(batch, cfg, Recorder(), checkpoints_per_epoch=1)
    acc = float((model.predict(x[:32]).argmax(1) == y[:32]).mean())
    assert acc >= 0.95, f"{family} reached only {acc:.2f} on the batch it trained on"


def test_training_is_deterministic_for_torchnet(tiny):
    mod = family_module("torchnet")
    a = mod.train(tiny, mod.Config(epochs=1, batch_size=32), Recorder()).predict(tiny.x_val[:10])
    b = mod.train(tiny, mod.Config(epochs=1, batch_size=32), Recorder()).predict(tiny.x_val[:10])
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_finetune_distillation_keeps_the_replayed_digits_answers(trained, tiny, tmp_path):
    """Replayed digits whose labels now disagree with the model: plain fine-tuning follows the new
    labels; with distillation (models/finetune.py) the model keeps more of its own answers on
    those digits, and the new digits are learnt either way."""
    from models.finetune import finetune

    base = trained["torchnet"][0]
    native = base.export(tmp_path / "base")["native"]
    x, y = tiny.x_train[:240], tiny.y_train[:240].copy()
    replayed = np.zeros(len(y), bool)
    replayed[:120] = True
    before = base.predict(x[:120]).argmax(1)
    y[:120] = (before + 1) % 10  # every replayed digit labelled against the model's own answer
    data = TrainData(x, y, tiny.x_val, tiny.y_val, replayed)

    def kept(distill):
        model = finetune("torchnet", native, {}, data, Recorder(), epochs=3, seed=0, distill=distill)
        return float((model.predict(x[:120]).argmax(1) == before).mean())

    plain, distilled = kept(0.0), kept(5.0)
    assert distilled > plain + 0.2, (plain, distilled)
