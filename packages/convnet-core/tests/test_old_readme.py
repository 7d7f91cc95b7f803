"""The examples of ConvNet-NumPy's README and training script, run against convnet_core.

Each test keeps the old code as it was written; the only changes are:
- imports: `from nn import Model` -> `from convnet_core import Model`, `nn.layers` ->
  `convnet_core.layers`; `nn.data.load_mnist_gz` / `data.Dataset` are replaced by a small
  stand-in with the old Dataset interface (uint8 (N, 28, 28) images, labels, and
  `batches(batch_size, shuffle, preprocess, num_threads)`), so that this package's tests
  need neither convnet-data nor the MNIST files;
- sizes: fewer samples and epochs, to keep the tests fast;
- `model.save` / `Model.load` go to a stand-in for convnet-io (its own tests cover files);
- where the old API itself cannot work with pure layers, a comment says "ADAPTED" and why.
"""

import sys
import types

import numpy as np
import pytest
from convnet_core import Model
from convnet_core.layers import (
    Activation,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
)


class Dataset:
    """ConvNet-NumPy's `nn.data.Dataset`: uint8 images (N, 28, 28) and integer labels."""

    def __init__(self, images, labels):
        self.images = images
        self.labels = labels
        self._rng = np.random.default_rng(0)

    def __len__(self):
        return len(self.images)

    def batches(self, batch_size=64, shuffle=True, preprocess=None, num_threads=None):
        order = self._rng.permutation(len(self)) if shuffle else np.arange(len(self))
        for start in range(0, len(self), batch_size):
            index = order[start : start + batch_size]
            x = self.images[index].astype(np.float32)
            x = preprocess(x) if preprocess is not None else x / 255.0
            yield x.astype(np.float32), self.labels[index]


def synthetic_mnist(n, seed):
    """Digits stand-in: class k is a bright bar on row 2k + 4 of a noisy 28x28 image."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for k in range(10):
        images[labels == k, 2 * k + 4 : 2 * k + 6, 4:24] = 255
    return Dataset(images, labels)


def load_mnist_gz(path):
    """Stand-in for `nn.data.load_mnist_gz(path) -> (train_dataset, test_dataset)`."""
    return synthetic_mnist(256, seed=0), synthetic_mnist(64, seed=1)


@pytest.fixture
def fake_io(monkeypatch):
    """A convnet_io stand-in: save keeps the model's parts, load rebuilds a Model."""
    store = {}
    module = types.ModuleType("convnet_io")

    def save(path, model, **kw):
        store[path] = (model.network, model.params, model.state, model.input_shape, model.loss_name)

    def load(path, **kw):
        network, params, state, input_shape, loss_name = store[path]
        return Model.from_parts(network, params, state, input_shape, loss_name=loss_name)

    module.save, module.load = save, load
    monkeypatch.setitem(sys.modules, "convnet_io", module)
    return store


def test_train_your_first_model(fake_io):
    # Load MNIST data
    train_data, test_data = load_mnist_gz("mnist_dataset")

    # Build model
    model = Model([
        Conv2D(8, (3, 3)), Activation('relu'),
        MaxPool2D((2, 2)),
        Conv2D(16, (3, 3)), Activation('relu'),
        MaxPool2D((2, 2)),
        Flatten(),
        Dense(64), Activation('relu'),
        Dense(10)  # 10 classes for digits 0-9
    ])  # fmt: skip

    # Compile and train
    model.compile(loss="categorical_crossentropy", optimizer="adam", lr=1e-3)
    history = model.fit(train_data, epochs=4, batch_size=64, num_classes=10)  # epochs: 10

    # Save model
    model.save("my_model.hdf5")

    assert history["acc"][-1] > history["acc"][0]
    assert "my_model.hdf5" in fake_io
    assert model.input_shape == (1, 28, 28)  # (N, 28, 28) batches got a channel axis


def test_detailed_api_reference(fake_io):
    dataset, test = load_mnist_gz("mnist_dataset/")
    X_val = test.images.astype(np.float32) / 255.0
    y_val = test.labels
    X_test = X_val

    # Create model
    model = Model()  # Empty model
    model.add(Conv2D(32, (3, 3)))  # Add layers one by one
    # OR
    model = Model([Conv2D(32, (3, 3)), Activation("relu")])  # All at once
    model.add(MaxPool2D((4, 4)))  # (added so that the model ends in 10 classes)
    model.add(Flatten())
    model.add(Dense(10))

    # Configure training
    model.compile(
        loss='categorical_crossentropy',  # or 'mse'
        optimizer='adam',                 # or 'sgd'
        lr=1e-3,                         # learning rate
        weight_decay=1e-4,               # L2 regularization
        clip_norm=5.0                    # gradient clipping
    )  # fmt: skip

    # Train the model
    history = model.fit(
        dataset,                         # training data
        epochs=3,                        # number of epochs (10 in the README)
        batch_size=64,                   # batch size
        num_classes=10,                  # for one-hot encoding
        val_data=(X_val, y_val),        # validation data
        early_stopping=True,             # enable early stopping
        patience=5,                      # early stopping patience
        min_delta=1e-4,                  # minimum improvement
        lr_schedule='plateau',           # learning rate scheduling
        lr_patience=3,                   # LR schedule patience
        lr_factor=0.5,                   # LR reduction factor
        lr_min=1e-6                      # minimum learning rate
    )  # fmt: skip

    # Make predictions
    predictions = model.predict(X_test)

    # Save and load
    model.save("model.hdf5")
    loaded_model = Model.load("model.hdf5")

    assert set(history) >= {"loss", "acc", "val_acc", "lr"} and len(history["val_acc"]) == 3
    assert predictions.shape == (64, 10)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-5)
    assert model.optimizer.weight_decay == 1e-4 and model.optimizer.clip_norm == 5.0
    np.testing.assert_array_equal(loaded_model.predict(X_test), predictions)


def test_optimizer_options():
    model = Model([Flatten(), Dense(10)])
    # Stochastic Gradient Descent
    model.compile(optimizer="sgd", lr=0.01, momentum=0.9)
    assert (model.optimizer.name, model.optimizer.lr, model.optimizer.momentum) == (
        "sgd", 0.01, 0.9)  # fmt: skip
    # Adam optimizer (adaptive learning rates)
    model.compile(optimizer="adam", lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
    assert (model.optimizer.name, model.optimizer.beta2) == ("adam", 0.999)


def build_mnist_cnn(num_classes=10, lr=1e-3, weight_decay=1e-4, clip_norm=5.0):
    """Construct a small CNN with regularization settings baked in."""
    model = Model([
        Conv2D(8, (3, 3)), Activation('relu'),
        MaxPool2D((2, 2)),
        Conv2D(16, (3, 3)), Activation('relu'),
        MaxPool2D((2, 2)),
        Flatten(),
        Dense(64), Activation('relu'), Dropout(0.2),
        Dense(num_classes)
    ])  # fmt: skip
    # New: weight decay & gradient clipping configured via compile
    model.compile(
        loss='categorical_crossentropy',
        optimizer='adam',
        lr=lr,
        weight_decay=weight_decay,
        clip_norm=clip_norm
    )  # fmt: skip
    return model


def test_mnist_train_example(fake_io, capsys):
    """mnist_train-example.py's main()."""
    # Load full training and test sets
    train_full, test = load_mnist_gz("mnist_dataset")
    num_classes = 10

    # Create a validation split from training data (e.g., last 10%)
    split_idx = int(0.9 * len(train_full))
    train = Dataset(train_full.images[:split_idx], train_full.labels[:split_idx])
    val_images = train_full.images[split_idx:]
    val_labels = train_full.labels[split_idx:]
    # Normalize validation images (training batches are normalized internally)
    X_val = val_images.astype(np.float32) / 255.0
    y_val = val_labels

    model = build_mnist_cnn(num_classes)

    # Train with early stopping & learning rate reduction on plateau.
    history = model.fit(
        train,
        epochs=3,  # 450 in the script
        batch_size=64,
        num_classes=num_classes,
        val_data=(X_val, y_val),
        early_stopping=True,
        patience=500,
        lr_schedule='plateau',
        lr_factor=0.5,
        lr_patience=4,
        verbose=True
    )  # fmt: skip

    model.summary()

    # Report best validation accuracy
    best_val = max([v for v in history["val_acc"] if v is not None])
    print(f"Best validation accuracy: {best_val:.4f}")

    # Save and reload the model
    model.save("weights.hdf5")
    loaded = Model.load("weights.hdf5")
    # Build with sample input to ensure parameter shapes are realized
    sample = train.images[:4].astype(np.float32) / 255.0
    loaded.build(sample.shape)
    preds = loaded.predict(sample)
    print("Reloaded prediction batch shape:", preds.shape)

    out = capsys.readouterr().out
    assert "epoch 3/3" in out and "Total params" in out
    assert "Reloaded prediction batch shape: (4, 10)" in out
    np.testing.assert_array_equal(preds, model.predict(sample))


def test_custom_training_loop(capsys, monkeypatch):
    # ADAPTED for machines with a GPU: this loop computes its accuracy with NumPy on the
    # model's output (np.argmax(predictions) == y_batch), so the model must stay on the CPU.
    monkeypatch.setenv("NN_DISABLE_CUDA", "1")
    train_data, _ = load_mnist_gz("mnist_dataset")
    num_epochs = 2

    # Manual training for full control
    model = Model([Conv2D(4, (3, 3)), Activation('relu'), MaxPool2D((2, 2)), Flatten(),
                   Dense(10), Activation('softmax')])  # fmt: skip
    model.compile(loss="categorical_crossentropy", optimizer="adam", lr=1e-2)

    for epoch in range(num_epochs):
        epoch_loss = 0
        epoch_acc = 0
        num_batches = 0

        for X_batch, y_batch in train_data.batches(batch_size=64):
            # Forward pass
            predictions = model.forward(X_batch, training=True)

            # Compute loss
            loss_val = model.loss.forward(predictions, y_batch)

            # Backward pass
            loss_grad = model.loss.backward()
            model.backward(loss_grad)

            # Update parameters
            model.optimizer.step(model.get_params_and_grads())

            # Track metrics
            epoch_loss += loss_val
            if y_batch.ndim == 1:  # integer labels
                epoch_acc += np.mean(np.argmax(predictions, axis=1) == y_batch)
            num_batches += 1

        print(f"Epoch {epoch+1}: Loss={epoch_loss/num_batches:.4f}, Acc={epoch_acc/num_batches:.4f}")  # fmt: skip  # noqa: E501

    lines = capsys.readouterr().out.strip().splitlines()
    losses = [float(line.split("Loss=")[1].split(",")[0]) for line in lines]
    assert len(lines) == 2 and losses[1] < losses[0]


def test_understanding_backpropagation():
    # Manually trace gradients through a simple network
    model = Model([Dense(10), Activation("relu"), Dense(1)])
    model.build((1, 5))

    # Forward pass with custom input
    x = np.random.randn(1, 5)  # noqa: NPY002 (the old code as written)
    output = model.forward(x, training=True)

    # Manually compute gradients
    grad = np.array([[1.0]])  # Start with unit gradient
    # ADAPTED: the old loop called `layer.backward(grad)` on each layer, which kept its
    # inputs and gradients inside the layer objects. Layers are now pure specs, so the
    # model back-propagates and keeps the gradients in `model.grads`, one entry per layer.
    dx = model.backward(grad)
    for layer, layer_grads in zip(model.layers, model.grads, strict=True):
        print(f"Gradient of {layer.__class__.__name__}: {list(layer_grads.keys())}")

    assert output.shape == (1, 1) and dx.shape == (1, 5)
    assert list(model.grads[0]) == ["W", "b"] and model.grads[1] == {}


def test_batchnorm_and_dropout_layers_of_the_reference():
    model = Model([Conv2D(filters=4, kernel_size=(3, 3), stride=1, padding='same',
                          use_bias=True), BatchNorm2D(momentum=0.9, eps=1e-5),
                   Activation('relu'), MaxPool2D(pool_size=(2, 2), stride=None), Flatten(),
                   Dropout(rate=0.2), Dense(units=10, use_bias=True)])  # fmt: skip
    model.compile(loss="cce", optimizer="sgd", lr=0.01, momentum=0.9)
    train, _ = load_mnist_gz("mnist_dataset")
    history = model.fit(train, epochs=1, batch_size=64, num_classes=10, verbose=False)
    assert np.isfinite(history["loss"][0])


def test_activation_takes_convnet_numpys_keyword_func():
    # ConvNet-NumPy's files store an Activation's function under "func", its argument's name
    assert Activation(func="relu") == Activation("relu") == Activation(name="relu")
    assert Activation(func="leaky_relu", alpha=0.2) == Activation("leaky_relu", 0.2)
    with pytest.raises(TypeError, match="name or func .* not both"):
        Activation("relu", func="tanh")
    with pytest.raises(TypeError, match=r"needs the function's name, e\.g\. Activation\('relu'\)"):
        Activation()
    with pytest.raises(ValueError, match="unknown activation 'rleu'"):
        Activation(func="rleu")
