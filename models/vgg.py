"""`vgg`: a VGG-style Keras net sized for 28x28 digits, trained from scratch.

Blocks of two 3x3 convolutions then a 2x2 max-pool, widths doubling per block
(28 -> 14 -> 7 -> 3), then a small dense head, as in Simonyan and Zisserman (2014). No
pretrained weights can be downloaded here, and ImageNet features would not help 28x28 digits.
"""

from __future__ import annotations

from dataclasses import dataclass

from models._keras import train_family
from models.common import Reporter, TrainData, positive

FAMILY = "vgg"


@dataclass
class Config:
    learning_rate: float = 1e-3
    batch_size: int = 128
    epochs: int = 10
    width: int = 16  # filters in the first block; 64 (the paper's) is 16x the compute for no gain on MNIST
    blocks: int = 3  # 3 blocks reach a 3x3 map; a 4th would pool it to 1x1
    dense: int = 128  # the paper's 4096 would be ~99% of the parameters here
    dropout: float = 0.3
    batch_norm: bool = True  # not in the 2014 paper; it lets the net train from scratch at this lr
    seed: int = 0

    def check(self, name, value):
        if name == "dropout" and not 0.0 <= value < 1.0:
            return "must be in [0, 1)"
        if name == "blocks" and not 1 <= value <= 3:
            return "must be 1, 2 or 3 (28x28 input)"
        return positive(name, value) if name not in ("seed", "batch_norm") else None


def build(config: Config):
    import keras
    from keras import layers

    inp = keras.Input(shape=(28, 28), name="image")
    x = layers.Reshape((28, 28, 1))(inp)
    for b in range(config.blocks):
        for _ in range(2):
            x = layers.Conv2D(config.width * 2**b, 3, padding="same", use_bias=not config.batch_norm)(x)
            if config.batch_norm:
                x = layers.BatchNormalization(momentum=0.9)(x)  # 0.99 lags on short runs
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(config.dense, activation="relu")(x)
    x = layers.Dropout(config.dropout)(x)
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="vgg")


def train(data: TrainData, config: Config, reporter: Reporter, checkpoints_per_epoch: int = 4):

    return train_family(FAMILY, build(config), data, config, reporter, checkpoints_per_epoch)
