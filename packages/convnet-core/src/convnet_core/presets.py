"""Ready-made networks: the old project's README model and the strongest MNIST network.

Each function returns a fresh list of layer specs for 28x28 single-channel digits, to pass
to `Model(...)` or `layers.Sequential(...)`:

    import convnet_core as cn
    model = cn.Model(cn.presets.readme_layers(), seed=0)
    model.build((1, 28, 28))
"""

from __future__ import annotations

from . import layers as L

__all__ = ["best_layers", "readme_layers"]


def readme_layers(num_classes: int = 10) -> list:
    """The old ConvNet-NumPy README model, exactly: Conv8-Conv16-Dense64 with 'same' padding.

    Shapes per sample for a (1, 28, 28) input (3x3 convolutions keep the size, each 2x2
    max-pool halves it):

        Conv2D(8)   -> (8, 28, 28)     80 weights (8*1*3*3 + 8)
        MaxPool2D   -> (8, 14, 14)
        Conv2D(16)  -> (16, 14, 14)    1,168 weights (16*8*3*3 + 16)
        MaxPool2D   -> (16, 7, 7)
        Flatten     -> (784,)
        Dense(64)   -> (64,)           50,240 weights (784*64 + 64)
        Dense(num_classes) -> (num_classes,)   650 weights for 10 classes

    52,138 weights in all for 10 classes. The ReLUs follow each conv and the hidden Dense.
    """
    return [
        L.Conv2D(8, (3, 3), padding="same"),
        L.Activation("relu"),
        L.MaxPool2D((2, 2)),
        L.Conv2D(16, (3, 3), padding="same"),
        L.Activation("relu"),
        L.MaxPool2D((2, 2)),
        L.Flatten(),
        L.Dense(64),
        L.Activation("relu"),
        L.Dense(num_classes),
    ]


def best_layers(num_classes: int = 10) -> list:
    """Three conv blocks (16, 32, 64 filters) with BatchNorm, then a dropout-regularised head.

    Each block is Conv2D 3x3 ('same') -> BatchNorm2D -> ReLU -> MaxPool2D 2x2. Shapes per
    sample for a (1, 28, 28) input:

        block 1 -> (16, 28, 28), pool -> (16, 14, 14)
        block 2 -> (32, 14, 14), pool -> (32, 7, 7)
        block 3 -> (64, 7, 7),   pool -> (64, 3, 3)
        Flatten -> (576,)
        Dense(128) -> ReLU -> Dropout(0.3) -> (128,)
        Dense(num_classes) -> (num_classes,)

    98,666 trainable weights for 10 classes (plus BatchNorm running statistics).
    """

    def conv_bn_relu(filters: int) -> list:
        return [L.Conv2D(filters, (3, 3), padding="same"), L.BatchNorm2D(), L.Activation("relu")]

    return [
        *conv_bn_relu(16),
        L.MaxPool2D((2, 2)),  # (16, 14, 14)
        *conv_bn_relu(32),
        L.MaxPool2D((2, 2)),  # (32, 7, 7)
        *conv_bn_relu(64),
        L.MaxPool2D((2, 2)),  # (64, 3, 3)
        L.Flatten(),
        L.Dense(128),
        L.Activation("relu"),
        L.Dropout(0.3),
        L.Dense(num_classes),
    ]
