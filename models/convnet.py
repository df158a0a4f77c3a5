"""`convnet`: the Keras "Simple MNIST convnet" example (keras.io/examples/vision/mnist_convnet).

Conv 32 3x3 -> max-pool -> Conv 64 3x3 -> max-pool -> flatten -> dropout -> dense 10:
34,826 parameters, exactly the example's. The Reshape layer adds none; it lets the model
take the (n, 28, 28) contract of models.common directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from models._keras import train_family
from models.common import Reporter, TrainData, positive

FAMILY = "convnet"


@dataclass
class Config:
    learning_rate: float = 1e-3  # Adam's default, as in the example
    batch_size: int = 128  # the example's
    epochs: int = 15  # the example's; the training profile may override it
    dropout: float = 0.5  # the example's
    seed: int = 0

    def check(self, name, value):
        if name == "dropout" and not 0.0 <= value < 1.0:
            return "must be in [0, 1)"
        return positive(name, value) if name != "seed" else None


def build(config: Config):
    import keras
    from keras import layers

    inp = keras.Input(shape=(28, 28), name="image")
    x = layers.Reshape((28, 28, 1))(inp)
    x = layers.Conv2D(32, kernel_size=(3, 3), activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = layers.Conv2D(64, kernel_size=(3, 3), activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(config.dropout)(x)
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="convnet")


def train(data: TrainData, config: Config, reporter: Reporter, checkpoints_per_epoch: int = 4):

    return train_family(FAMILY, build(config), data, config, reporter, checkpoints_per_epoch)
