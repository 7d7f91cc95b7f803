"""`Model`: the Keras-style stateful shell that users of ConvNet-NumPy know.

    model = Model([Conv2D(8, (3, 3)), Activation("relu"), MaxPool2D((2, 2)),
                   Flatten(), Dense(10)])
    model.compile(loss="categorical_crossentropy", optimizer="adam", lr=1e-3)
    history = model.fit((X, y), epochs=5, batch_size=64, val_data=(X_val, y_val))
    probabilities = model.predict(X_test)

A Model holds a `Sequential` spec (`network`), the pytrees `params`, `state` and
`opt_state`, an optimizer and a loss, and does nothing a custom loop could not do with
`convnet_core.apply`, `grad` and an optimizer's `update`.

Inputs: images are NCHW. Batches shaped (N, H, W) (one channel) or channels-last
(N, H, W, C) with C in (1, 3), as ConvNet-NumPy used, are rearranged when the model's
input is (C, H, W) and the reading is unambiguous (see `training.adapt_layout`). Inputs are
cast to the model's dtype but never rescaled: pass images in [0, 1].

Softmax at the end: a network ending in Activation("softmax") compiled with cross-entropy
is trained on the logits before the softmax (the softmax and the loss are fused, which is
exact and stable); `predict` still returns probabilities.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy

from . import backend, checks, losses, optim
from . import precision as _precision
from . import tree as _tree
from .api import init
from .callbacks import BestWeights
from .layers.activation import Activation
from .layers.base import ShapeError, check_layer, layer_from_config, layer_to_config
from .layers.combinators import Sequential
from .training import (
    LOOP_STREAM,
    Labels,
    TrainingData,
    adapt_layout,
    epoch_seed,
    evaluate_batches,
    fresh_seed,
    infer_input_shape,
)
from .training import fit as _fit

__all__ = ["Model"]

CROSS_ENTROPY_NAMES = ("categorical_crossentropy", "cce", "softmax_cross_entropy")


def _resolve_xp(device: Any) -> Any:
    if device is None or isinstance(device, str):
        return backend.array_module(device or "auto")
    if not all(hasattr(device, name) for name in ("asarray", "ndarray", "float32")):
        raise TypeError(
            f"Model: device must be 'auto', 'cpu', 'cuda' or an array module, not {device!r}"
        )
    return device  # an array module given directly


def _weight_dtype(dtype: Any) -> numpy.dtype:
    """`dtype` as the dtype of a Model's weights: a floating type of 32 bits or more."""
    resolved = numpy.dtype(dtype)  # host
    if resolved.kind != "f":
        raise ValueError(f"Model: dtype must be a floating type such as float32, not {dtype}")
    if resolved.itemsize < 4:
        raise ValueError(
            f"Model: dtype {resolved} is too narrow for weights: updates smaller than a "
            "weight's float16 resolution (1/1024 of it) are lost and Adam's eps (1e-8) "
            "rounds to 0, so training diverges. For float16 compute keep dtype float32 "
            "and use compile(precision='mixed'): float32 master weights, float16 forward "
            "and backward"
        )
    return resolved


def _is_single(layers: Any) -> bool:
    """True for one layer (or anything else) passed where a list of layers belongs."""
    return not isinstance(layers, (list, tuple)) and not hasattr(layers, "__iter__")


class Model:
    """A sequence of layers with its parameters, optimizer, loss and training history.

    Args:
        layers: a list of layers (or a `Sequential`); more can be added with `add`.
        seed: seeds weight initialisation, shuffling and dropout (None: drawn once).
        device: "auto" (GPU when usable), "cpu", "cuda", or an array module.
        dtype: the floating type of parameters and inputs: float32 (the default) or
            float64 (for gradient checks). float16 is refused: weights kept in float16
            lose most updates and Adam's eps (1e-8) is 0 there; float16 compute with
            float32 weights is `compile(precision="mixed")`.

    Attributes: `network` (Sequential), `input_shape` (per sample, None until built),
    `params`, `state`, `opt_state` (pytrees), `optimizer`, `loss_name`, `precision` (a
    `precision.Policy`), `loss_scaler` (mixed precision's `precision.DynamicLossScaler`
    once fit has taken a mixed-precision step, else None), `history` ({"loss", "acc",
    "val_loss", "val_acc", "lr"} lists), `epoch` (epochs completed), `xp` (numpy or cupy),
    `seed`, `stop_training`, `logged_metrics` (while fit runs: the entries of the epoch
    logs that get a value, for callbacks to check their settings in `on_train_begin`),
    `best_weights` (a `callbacks.BestWeights` (epoch, params, state): the best epoch's
    weights that fit's `EarlyStopping(restore_best=True)` recorded, references to the trees
    of that epoch, no copy; None otherwise, and at the start of every fit that does not
    resume). `save` stores all of them but `xp`, `stop_training`, `logged_metrics` and
    `best_weights`; a `convnet_io.Checkpoint` also stores `best_weights` when they are of
    an earlier epoch than the checkpoint's, so that `fit(resume_from=...)` can restore them.
    """

    def __init__(
        self, layers=None, *, seed: int | None = None, device: Any = None, dtype: Any = "float32"
    ):
        if isinstance(layers, Sequential):
            layers = layers.layers
        if isinstance(layers, (str, bytes)) or (layers is not None and _is_single(layers)):
            raise TypeError(f"Model takes a list of layers, not {layers!r}")
        self.layers: list[Any] = [
            check_layer(layer, f"Model layer {index}") for index, layer in enumerate(layers or [])
        ]
        self.xp = _resolve_xp(device)
        self.dtype = _weight_dtype(dtype)
        self.seed = None if seed is None else int(seed)
        self.input_shape: tuple[int, ...] | None = None
        self.params: Any = None
        self.state: Any = None
        self.grads: Any = None
        self.optimizer: optim.Optimizer | None = None
        self.opt_state: Any = None
        self.loss_name: str | None = None
        self._loss_fn: Any = None
        self.loss: LossFunction | None = None
        self.history: dict[str, list] = {}
        self.epoch = 0
        self.stop_training = False
        self.resuming = False  # true while fit(resume_from=...) starts its callbacks
        self.best_weights: BestWeights | None = None  # set by EarlyStopping(restore_best=True)
        # the epoch-log entries the running fit gives a value, e.g. ("loss", "acc", "lr");
        # None outside fit
        self.logged_metrics: tuple[str, ...] | None = None
        self._record: dict[str, Any] | None = None
        self.precision = _precision.get_policy(None)
        self.loss_scaler: _precision.DynamicLossScaler | None = None
        self._warned_mixed_on_numpy = False  # fit warns once per model (training.fit)
        self._loop_rng: Any = None

    # -- structure -------------------------------------------------------------------

    @property
    def network(self) -> Sequential:
        """The layers as one `Sequential` spec."""
        return Sequential(tuple(self.layers))

    def add(self, layer: Any) -> Model:
        """Append a layer (before the model is built). Returns the model."""
        if self.params is not None:
            raise ValueError("Model.add: the model is already built; add layers before build/fit")
        self.layers.append(check_layer(layer, "Model.add"))
        return self

    def _candidate_shapes(self, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        candidates = [] if len(shape) >= 4 else [shape]
        if len(shape) >= 2:
            try:
                candidates.append(infer_input_shape(self.network, shape))
            except ShapeError:
                pass
        return candidates

    def build(self, input_shape, *, seed: int | None = None) -> Model:
        """Create the parameters for inputs of `input_shape`. Returns the model.

        `input_shape` is one sample's shape, e.g. (1, 28, 28) or (784,); a batched shape
        (N, ...) is also taken when the per-sample reading does not fit the network, e.g.
        (N, 1, 28, 28), (N, 28, 28), (N, 28, 28, 1) or (1, 5) for a Dense model. On a built
        model a compatible shape is a no-op and any other a ValueError.
        """
        shape = tuple(int(d) for d in input_shape)
        if not shape or min(shape) < 1:
            raise ValueError(f"Model.build: input_shape must be positive sizes, got {shape}")
        if self.params is not None:
            if shape == self.input_shape or (len(shape) >= 2 and self._layout_accepts(shape)):
                return self
            raise ValueError(
                f"Model.build: the model is built for inputs {self.input_shape}, not {shape}"
            )
        if not self.layers:
            raise ValueError("Model.build: the model has no layers; add some first")
        errors = []
        for candidate in self._candidate_shapes(shape):
            try:
                self.network.output_shape(candidate)
            except (ShapeError, ValueError, TypeError) as error:
                errors.append(str(error))
                continue
            break
        else:
            raise ShapeError(f"Model.build: cannot build for input shape {shape}: {errors}")
        if seed is not None:
            self.seed = int(seed)
        self._ensure_seed()
        params, state = init(
            self.network,
            candidate,
            rng=numpy.random.default_rng(self.seed),
            xp=self.xp,
            dtype=self.dtype,
        )
        _check_init_result(self.layers, params, state)
        self.params, self.state = params, state
        self.input_shape = candidate
        self.opt_state = None
        return self

    def _layout_accepts(self, batch_shape: tuple[int, ...]) -> bool:
        try:
            adapt_layout(numpy.empty((0, *batch_shape[1:])), self.input_shape, numpy)  # host
        except ShapeError:
            return False
        return True

    def _ensure_seed(self) -> None:
        if self.seed is None:
            self.seed = fresh_seed()

    def _require_built(self, what: str) -> None:
        if self.params is None:
            raise ValueError(
                f"Model.{what}: the model is not built; call build(input_shape) or fit first"
            )

    # -- compile ---------------------------------------------------------------------

    def compile(
        self,
        loss="categorical_crossentropy",
        optimizer="adam",
        lr=None,
        weight_decay=None,
        clip_norm=None,
        momentum=None,
        beta1=None,
        beta2=None,
        eps=None,
        precision=None,
        **options,
    ) -> Model:
        """Choose the loss, the optimizer and the precision. Returns the model.

        Args:
            loss: "categorical_crossentropy" (or "cce"), "mse", "huber", or a function
                `fn(predictions, targets, *, xp) -> (value, dvalue/dpredictions)`.
            optimizer: "adam", "sgd", "adamw", "rmsprop", or an `optim.Optimizer`.
            lr, weight_decay, clip_norm, momentum, beta1, beta2, eps, **options: passed to
                the named optimizer (only those given; each optimizer has its defaults).
            precision: "float32" (default: everything in the model's dtype) or "mixed"
                (also "mixed_float16", or a `precision.Policy`): fit runs the network in
                float16 with float32 master weights and dynamic loss scaling (see
                `convnet_core.precision`). Fast only on a GPU: on NumPy, fit warns once
                per model that it is slow there (`precision.MixedPrecisionOnNumPyWarning`).
                Mixed precision keeps the weights in float32, so a float64 model refuses
                it (ValueError).
        """
        policy = _precision.get_policy(precision)
        self._check_policy(policy, f"compile(precision={precision!r})")
        self._set_loss(loss)
        self.precision = policy
        self.loss_scaler = None
        given = {
            "lr": lr,
            "momentum": momentum,
            "beta1": beta1,
            "beta2": beta2,
            "eps": eps,
            "clip_norm": clip_norm,
            "weight_decay": weight_decay,
            **options,
        }
        given = {key: value for key, value in given.items() if value is not None}
        if isinstance(optimizer, optim.Optimizer):
            if given:
                raise ValueError(
                    f"compile: options {sorted(given)} go to the optimizer's constructor when "
                    "an optimizer object is passed"
                )
            self.optimizer = optimizer
        elif isinstance(optimizer, str):
            self.optimizer = optim.get(optimizer, **given)
        else:
            raise TypeError(
                f"optimizer must be a name or an optim.Optimizer, not {type(optimizer).__name__}"
            )
        self.opt_state = None
        self.loss = LossFunction(self)
        return self

    def _check_policy(self, policy: _precision.Policy, where: str) -> None:
        """ValueError when a mixed `policy` keeps master weights in another dtype than this
        model's (a float64 model and float32 master weights)."""
        if policy.mixed and numpy.dtype(policy.param_dtype) != self.dtype:
            raise ValueError(
                f"{where}: mixed precision keeps the master weights in {policy.param_dtype}, "
                f"but this model's dtype is {self.dtype}; use Model(..., dtype="
                f"{policy.param_dtype!r}) for mixed precision, or precision='float32' to "
                f"train in {self.dtype}"
            )

    def _set_loss(self, loss: Any) -> None:
        """Set the loss from a name in `losses.LOSSES` or a function."""
        if isinstance(loss, str):
            if loss not in losses.LOSSES:
                raise ValueError(
                    f"unknown loss {loss!r}; known: {', '.join(sorted(losses.LOSSES))}"
                )
            self._loss_fn = losses.LOSSES[loss]
            self.loss_name = loss
        elif callable(loss):
            self._loss_fn = loss
            self.loss_name = getattr(loss, "__name__", "custom")
        else:
            raise TypeError(f"loss must be a name or a function, not {type(loss).__name__}")
        self.loss = LossFunction(self)

    def _is_cross_entropy(self) -> bool:
        return self.loss_name in CROSS_ENTROPY_NAMES

    def _fused_softmax(self) -> bool:
        """True when the last layer is a softmax that the cross-entropy loss takes over."""
        last = self.layers[-1] if self.layers else None
        return self._is_cross_entropy() and isinstance(last, Activation) and last.name == "softmax"

    def _trunk(self) -> tuple[Sequential, int]:
        """The layers that produce what the loss reads, and how many they are."""
        n = len(self.layers) - 1 if self._fused_softmax() else len(self.layers)
        return Sequential(tuple(self.layers[:n])), n

    def _ensure_opt_state(self) -> None:
        if self.opt_state is None:
            self.opt_state = self.optimizer.init(self.params)

    @property
    def lr(self) -> float:
        """The current learning rate (read from, and written to, `opt_state`)."""
        if self.opt_state is None:
            if self.optimizer is None:
                raise ValueError("Model.lr: the model is not compiled")
            return self.optimizer.lr
        return optim.get_lr(self.opt_state)

    @lr.setter
    def lr(self, value: float) -> None:
        """Set the learning rate in `opt_state` (creating the state if needed)."""
        self._require_built("lr")
        self._ensure_opt_state()
        self.opt_state = optim.set_lr(self.opt_state, value)

    # -- training --------------------------------------------------------------------

    def fit(
        self,
        data,
        epochs=1,
        batch_size=64,
        num_classes=None,
        val_data=None,
        early_stopping=False,
        patience=5,
        min_delta=1e-4,
        lr_schedule=None,
        lr_patience=3,
        lr_factor=0.5,
        lr_min=1e-6,
        *,  # the arguments above in ConvNet-NumPy's order; those below by name only
        val_split=0.0,
        restore_best=True,
        shuffle=True,
        seed=None,
        verbose=True,
        callbacks=(),
        monitor=None,
        resume_from=None,
    ):
        """Train for `epochs` more epochs (with `resume_from`: up to `epochs` in total).

        The arguments up to `lr_min` keep ConvNet-NumPy's order, so its positional calls
        mean what they meant; the later ones are taken by name only.

        Args:
            data: (X, y) arrays, X (N, *input_shape), e.g. (N, 1, 28, 28) (image models
                also take (N, H, W) and (N, H, W, C)), or an object with
                `batches(batch_size, shuffle=...)` yielding (x, y) (convnet_data's Dataset).
                Labels: integers (N,) or one-hot (N, classes); for mse and huber, targets
                shaped like the output.
            num_classes: checked against the output layer (and the labels).
            val_data / val_split: (X_val, y_val) or a dataset / the last fraction of (X, y).
            early_stopping, patience, min_delta, restore_best: stop when the monitored
                metric has not improved for `patience` epochs and put back the best weights.
            lr_schedule: None, "plateau" (multiply by lr_factor after lr_patience epochs
                without improvement, not below lr_min), "cosine" (from the optimizer's lr to
                lr_min over the epochs), or fn(epoch_index, lr) -> lr called every epoch.
            monitor: the metric early stopping and the plateau watch; by default, as in
                ConvNet-NumPy, "val_acc" with validation data, else "acc" ("val_loss" /
                "loss" for models without accuracy).
            seed: makes shuffling, dropout and (if not built yet) the weights reproducible:
                the same seed and data give bit-identical results on the CPU. A dataset's
                `batches` gets a per-epoch seed when it takes a `seed` argument.
            verbose: one line per epoch, and a live progress bar (tqdm, when installed) in a
                terminal or a notebook.
            callbacks: objects with any of on_train_begin, on_epoch_begin, on_epoch_end
                and on_train_end (a `LearningRateScheduler`, an `EarlyStopping`, ...).
            resume_from: a checkpoint file written by convnet_io.Checkpoint. Training
                continues from it as if never stopped: its weights, history, epoch count,
                random state, optimizer and optimizer state (moments, step count, learning
                rate), precision policy, loss scaler (scale, good steps) and the best
                epoch's weights that early stopping recorded (`best_weights`, for
                restore_best) replace the model's, so it ends with the weights an
                uninterrupted run ends with. So the checkpoint's optimizer and precision
                win over those given to `compile`, with a UserWarning naming both when
                they differ; the compiled loss is kept (the checkpoint's is used only when
                there is none). A checkpoint from before precision was saved keeps the
                compiled precision and starts a new loss scaler. One from before
                checkpoints held the best epoch's weights cannot give back a best epoch
                earlier than its own: when no later epoch is better, restore_best keeps
                the last epoch's weights, with a RuntimeWarning.

        Returns:
            `model.history`: {"loss", "acc", "val_loss", "val_acc", "lr"}, one value per
            epoch over the model's whole life (None where a metric does not apply).

        Raises:
            training.NonFiniteLossError: the loss became NaN/inf (read back every batch on
                a CPU, every 50 on a GPU), or the parameters or the optimizer state did
                (checked at the end of each epoch; Adam's v can overflow while the loss
                stays finite). The model keeps the last parameters, state and optimizer
                state known to be all finite: the last step a finite loss vouched for if
                all of them are, else where the epoch started.
        """
        return _fit(
            self,
            data,
            epochs=epochs,
            batch_size=batch_size,
            num_classes=num_classes,
            val_data=val_data,
            val_split=val_split,
            early_stopping=early_stopping,
            patience=patience,
            min_delta=min_delta,
            restore_best=restore_best,
            lr_schedule=lr_schedule,
            lr_patience=lr_patience,
            lr_factor=lr_factor,
            lr_min=lr_min,
            shuffle=shuffle,
            seed=seed,
            verbose=verbose,
            callbacks=callbacks,
            monitor=monitor,
            resume_from=resume_from,
        )

    def _prepare_input(self, x: Any) -> Any:
        """`x` on the model's device, in its dtype and layout (building the model if needed)."""
        x = self.xp.asarray(x)
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        if self.params is None:
            self.build(infer_input_shape(self.network, x.shape))
        return adapt_layout(x, self.input_shape, self.xp)

    # -- inference -------------------------------------------------------------------

    def _inference_batches(self, x, batch_size):
        for start in range(0, len(x), batch_size):
            yield self._prepare_input(x[start : start + batch_size])

    def predict(self, x, batch_size: int = 256) -> numpy.ndarray:
        """The outputs for inputs `x` (N, ...), as a NumPy array on the host.

        With a cross-entropy loss these are class probabilities (N, classes), whether or
        not the network ends in a softmax; otherwise the network's outputs.
        """
        batch_size = checks.count(batch_size, "Model.predict: batch_size")
        if numpy.ndim(x) == 0:
            raise ValueError(f"Model.predict: x must be a batch of inputs (N, ...), got {x!r}")
        if len(x) == 0:
            raise ValueError("Model.predict: no inputs")
        trunk, n = self._trunk() if self.loss_name else (self.network, len(self.layers))
        outputs = []
        for batch in self._inference_batches(x, batch_size):
            out, _, _ = trunk.apply(
                self.params[:n], self.state[:n], batch, training=False, rng=None, xp=self.xp
            )
            if self._is_cross_entropy():
                out = self.xp.exp(losses.log_softmax(out, xp=self.xp))
            outputs.append(backend.to_host(out))
        return numpy.concatenate(outputs)  # host: the predictions for the caller

    def evaluate(self, x, y, batch_size: int = 256, num_classes=None) -> tuple[float, Any]:
        """(mean loss, accuracy) on (x, y), in inference mode, `batch_size` samples at a time.

        x: (N, *input_shape), e.g. (N, 1, 28, 28); image models also take (N, H, W) when
        C = 1 and channels-last (N, H, W, C). y: integer classes (N,) or one-hot/soft rows
        (N, classes); for mse and huber, targets shaped like the output (N, *output_shape)
        (integer classes are one-hot encoded). Returns two Python floats; the accuracy is
        None when the output is not one row of classes (e.g. a regression's (N, 1)).
        """
        if self._loss_fn is None:
            raise ValueError("Model.evaluate: call compile first (it needs a loss)")
        batch_size = checks.count(batch_size, "Model.evaluate: batch_size")
        data = TrainingData((x, y), "evaluate: the data")
        x, y = data.arrays
        if self.params is None:
            self.build(infer_input_shape(self.network, x.shape))
        out_shape = self.network.output_shape(self.input_shape)
        labels = Labels(self, y, num_classes, out_shape, where="evaluate")
        return evaluate_batches(
            self, data.batches(batch_size, shuffle=False, seed=0, xp=self.xp), labels
        )

    def summary(self, print_fn=print) -> str:
        """A table of layers, output shapes and parameter counts; printed and returned."""
        self._require_built("summary")
        rows = [("Layer", "Output shape", "Params")]
        shape = self.input_shape
        for index, (layer, params) in enumerate(zip(self.layers, self.params, strict=True)):
            shape = tuple(layer.output_shape(shape))
            rows.append((f"{index}: {layer!r}", str(shape), f"{_tree.size(params):,}"))
        total = _tree.size(self.params)
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        line = "-" * (sum(widths) + 4)

        def fmt(row):
            return f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}"

        text = "\n".join(
            [
                fmt(rows[0]),
                line,
                *(fmt(r) for r in rows[1:]),
                line,
                f"Input shape: {self.input_shape}",
                f"Total params: {total:,}",
                f"State values: {_tree.size(self.state):,}",
            ]
        )
        if print_fn is not None:
            print_fn(text)
        return text

    # -- the ConvNet-NumPy custom-loop style ---------------------------------------------

    def forward(self, x, training: bool = False) -> Any:
        """Run the network on `x`; with training=True keep what `backward` needs.

        x: (N, *input_shape) (image models also take (N, H, W) and (N, H, W, C), as
        `predict` does), on the host or the device; it is converted to the model's device
        and dtype. Returns the output (N, *output_shape), e.g. logits (N, classes), on the
        model's device (probabilities when it ends in a softmax). With training=True the
        state (e.g. BatchNorm statistics) is updated.
        """
        x = self._prepare_input(x)
        trunk, n = self._trunk()
        rng = None
        if training:
            if self._loop_rng is None:
                self._ensure_seed()
                self._loop_rng = self.xp.random.default_rng(
                    epoch_seed(self.seed, self.epoch, LOOP_STREAM)
                )
            rng = self._loop_rng
        out, trunk_state, cache = trunk.apply(
            self.params[:n], self.state[:n], x, training=training, rng=rng, xp=self.xp
        )
        logits = out
        head_cache = None
        if n < len(self.layers):  # the fused softmax
            out, _, head_cache = self.layers[n].apply(
                {}, {}, logits, training=True, rng=None, xp=self.xp
            )
        if training:
            self.state = trunk_state + self.state[n:]
            self._record = {
                "cache": cache,
                "logits": logits,
                "output": out,
                "head_cache": head_cache,
                "n": n,
            }
        return out

    def backward(self, grad: Any) -> Any:
        """Back-propagate dLoss/doutput from the last `forward(training=True)`.

        grad: shaped like that forward's output (N, *output_shape), e.g. (N, classes);
        another shape is a ShapeError naming both (it would be broadcast). Stores the
        parameter gradients in `model.grads` (one dict per layer, each array shaped like
        its parameter) and returns dLoss/dx shaped like the input as the network saw it,
        (N, *input_shape) (an (N, 28, 28) input gives (N, 1, 28, 28)). Passing the
        gradient that `model.loss.backward()` returned uses the fused softmax/cross-entropy
        gradient (softmax(z) - t)/N directly. A gradient given on the host or in another
        dtype (a float64 `np.array([[1.0]])`) is copied to the device in the output's dtype,
        as `forward` copies its input; on CuPy the fused kernels take one dtype only.
        """
        record = self._record
        if record is None:
            raise ValueError("Model.backward: call forward(x, training=True) first")
        output = record["output"]
        if type(grad) is not type(output) or grad.dtype != output.dtype:
            grad = self.xp.asarray(grad, dtype=output.dtype)
        if grad.shape != output.shape:
            raise ShapeError(
                f"Model.backward expected grad of shape {tuple(output.shape)} (the output's "
                f"of the last forward) but got {tuple(grad.shape)}"
            )
        n = record["n"]
        trunk = Sequential(tuple(self.layers[:n]))
        if n < len(self.layers):
            fused = self.loss._fused_grad_for(grad, record) if self.loss else None
            if fused is not None:
                grad = fused
            else:
                _, grad = self.layers[n].grad({}, record["head_cache"], grad, xp=self.xp)
        grads, dx = trunk.grad(self.params[:n], record["cache"], grad, xp=self.xp, input_grad=True)
        self.grads = grads + tuple({} for _ in self.layers[n:])
        return dx

    def step(self) -> None:
        """Apply one optimizer update with the gradients of the last `backward`."""
        if self.grads is None:
            raise ValueError("Model.step: call backward first")
        if self.optimizer is None:
            raise ValueError("Model.step: call compile first")
        self._ensure_opt_state()
        self.params, self.opt_state = self.optimizer.update(self.params, self.grads, self.opt_state)

    def get_params_and_grads(self) -> ParamsAndGrads:
        """(param, grad) pairs, for ConvNet-NumPy's `model.optimizer.step(...)`."""
        return ParamsAndGrads(self)

    # -- persistence -----------------------------------------------------------------

    def save(self, path, **kwargs) -> None:
        """Save to `path` with convnet-io (architecture, weights, optimizer and its state,
        history, precision policy and loss scaler, RNG state)."""
        _convnet_io().save(path, self, **kwargs)

    @classmethod
    def load(cls, path, **kwargs) -> Model:
        """Load a model saved by `save` (or by ConvNet-NumPy) with convnet-io:
        `convnet_io.load(path, **kwargs)`, for example `device="cpu"`."""
        return _convnet_io().load(path, **kwargs)

    def get_rng_state(self) -> dict[str, Any]:
        """What determines fit's randomness (JSON-able): the seed. Shuffling and dropout of
        epoch e are drawn from (seed, e), so this and `epoch` resume them exactly, on the CPU
        and on a GPU alike."""
        return {"seed": self.seed}

    def set_rng_state(self, rng_state: dict[str, Any]) -> None:
        """Restore what `get_rng_state` returned."""
        if not isinstance(rng_state, dict) or "seed" not in rng_state:
            raise ValueError(f"set_rng_state expects {{'seed': int or None}}, got {rng_state!r}")
        seed = rng_state["seed"]
        self.seed = None if seed is None else int(seed)
        self._loop_rng = None

    @classmethod
    def from_parts(
        cls,
        network,
        params,
        state,
        input_shape,
        *,
        optimizer=None,
        opt_state=None,
        loss_name=None,
        history=None,
        epoch=0,
        device=None,
        precision=None,
        loss_scaler=None,
    ) -> Model:
        """A model assembled from saved pieces (used by convnet-io).

        `network` is a Sequential (or any layer, wrapped in one); `optimizer` an Optimizer
        or its config dict; `precision` a Policy, its config dict or a name (None:
        float32); `loss_scaler` a DynamicLossScaler or its config dict (None: a new one at
        the first mixed-precision step); arrays may be host NumPy arrays (moved to the
        model's device).
        """
        if not isinstance(network, Sequential):
            network, params, state = Sequential((network,)), (params,), (state,)
        model = cls(network.layers, device=device)
        model._set_parts(params, state, input_shape)
        if isinstance(optimizer, dict):
            optimizer = optim.from_config(optimizer)
        model.optimizer = optimizer
        if loss_name in losses.LOSSES:
            model._set_loss(loss_name)
        else:
            model.loss_name = loss_name  # a custom function: compile again to train
        if opt_state is not None:
            model.opt_state = backend.to_device(opt_state, model.xp)
        model.history = {key: list(values) for key, values in (history or {}).items()}
        model.epoch = int(epoch)
        model._set_precision(precision, loss_scaler, "Model.from_parts")
        return model

    def _set_precision(self, precision: Any, loss_scaler: Any, where: str) -> None:
        """Take a saved precision policy (a Policy, its config or a name) and loss scaler
        (a DynamicLossScaler, its config, or None), checked against the model's dtype."""
        if isinstance(precision, dict):
            precision = _precision.Policy.from_config(precision)
        policy = _precision.get_policy(precision)
        self._check_policy(policy, where)
        if isinstance(loss_scaler, dict):
            loss_scaler = _precision.DynamicLossScaler.from_config(loss_scaler)
        self.precision = policy
        self.loss_scaler = loss_scaler

    def _set_parts(self, params, state, input_shape) -> None:
        """Take saved params and state (host or device trees) for inputs of `input_shape`;
        the model's dtype becomes the params' (a float64 model stays float64)."""
        self.input_shape = tuple(int(d) for d in input_shape)
        self.network.output_shape(self.input_shape)
        self.params = _as_layer_tuple(backend.to_device(params, self.xp), len(self.layers))
        self.state = _as_layer_tuple(backend.to_device(state, self.xp), len(self.layers))
        floating = [leaf.dtype for leaf in _tree.leaves(self.params) if leaf.dtype.kind == "f"]
        if floating:
            self.dtype = _weight_dtype(floating[0])

    def _best_weights_from(self, saved: Any) -> BestWeights | None:
        """A checkpoint's (epoch, params, state) of the best epoch (host or device trees)
        as `BestWeights` on this model's device, shaped like its params; None for none."""
        if saved is None:
            return None
        epoch, params, state = saved
        n = len(self.layers)
        return BestWeights(
            int(epoch),
            _as_layer_tuple(backend.to_device(params, self.xp), n),
            _as_layer_tuple(backend.to_device(state, self.xp), n),
        )

    def _restore_checkpoint(self, path) -> None:
        """Load a checkpoint written by convnet_io.Checkpoint into this model (a built
        model refuses one saved for another input shape)."""
        checkpoint = _convnet_io().load_checkpoint(path, input_shape=self.input_shape)
        compiled_precision = None if self.optimizer is None else self.precision
        network = checkpoint["network"]
        if isinstance(network, dict):
            network = layer_from_config(network)
        if not isinstance(network, Sequential):
            network = Sequential((network,))
        if self.layers and layer_to_config(self.network) != layer_to_config(network):
            raise ValueError(
                f"fit(resume_from={str(path)!r}): the checkpoint's architecture differs from "
                "this model's"
            )
        self.layers = list(network.layers)
        self._set_parts(checkpoint["params"], checkpoint["state"], checkpoint["input_shape"])
        if checkpoint.get("optimizer") is not None:
            saved = optim.from_config(checkpoint["optimizer"])
            if self.optimizer is not None and saved != self.optimizer:
                warnings.warn(
                    f"fit(resume_from={str(path)!r}): the model was compiled with "
                    f"{self.optimizer!r} but the checkpoint was saved with {saved!r}; "
                    "training resumes with the checkpoint's optimizer and its state",
                    UserWarning,
                    stacklevel=4,  # the caller of Model.fit
                )
            self.optimizer = saved
        metadata = checkpoint.get("metadata") or {}
        if self._loss_fn is None and metadata.get("loss_name") in losses.LOSSES:
            self._set_loss(metadata["loss_name"])
        self.opt_state = (
            None
            if checkpoint.get("opt_state") is None
            else backend.to_device(checkpoint["opt_state"], self.xp)
        )
        self.history = {
            key: list(values) for key, values in (checkpoint.get("history") or {}).items()
        }
        self.epoch = int(checkpoint.get("epoch", 0))
        self.best_weights = self._best_weights_from(checkpoint.get("best_weights"))
        if checkpoint.get("rng_state"):
            self.set_rng_state(checkpoint["rng_state"])
        if checkpoint.get("precision") is None:  # saved before files held it: keep the compiled
            self.loss_scaler = None
            return
        saved_precision = _precision.Policy.from_config(checkpoint["precision"])
        if compiled_precision is not None and saved_precision != compiled_precision:
            warnings.warn(
                f"fit(resume_from={str(path)!r}): the model was compiled with precision "
                f"{_policy_name(compiled_precision)} but the checkpoint was saved with "
                f"{_policy_name(saved_precision)}; training resumes with the checkpoint's "
                "precision and its loss scaler",
                UserWarning,
                stacklevel=4,  # the caller of Model.fit
            )
        self._set_precision(
            saved_precision, checkpoint.get("loss_scaler"), f"fit(resume_from={str(path)!r})"
        )

    def __repr__(self) -> str:
        built = f"input_shape={self.input_shape}" if self.input_shape else "not built"
        return f"Model({len(self.layers)} layers, {built}, epoch={self.epoch})"


def _policy_name(policy: _precision.Policy) -> str:
    """'mixed', 'float32', or the policy's repr, for messages."""
    names = {_precision.MIXED: "'mixed'", _precision.FLOAT32: "'float32'"}
    return names.get(policy, repr(policy))


def _check_init_result(layers: tuple, params: tuple, state: tuple) -> None:
    """TypeError naming the layer whose init returned params or state (one entry per
    layer) with something other than an array where a leaf belongs (None, a number)."""
    for index, layer in enumerate(layers):
        for what, tree in (("params", params[index]), ("state", state[index])):
            for path, leaf in _tree.flatten(tree).items():
                if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
                    continue
                found = "None" if leaf is None else f"a {type(leaf).__name__}"
                place = f"at '{path}' of its {what}" if path else f"as its {what}"
                raise TypeError(
                    f"Model.build: layer {index}, {layer!r}, init returned {found} {place}; "
                    "a layer's params and state must be dicts (tuples, for combinators) of "
                    "arrays, {} when it has none"
                )


def _as_layer_tuple(tree: Any, n: int) -> tuple:
    """Params/state as a tuple with one entry per layer (lists from files become tuples)."""
    if isinstance(tree, dict) and all(str(i) in tree for i in range(n)) and len(tree) == n:
        tree = [tree[str(i)] for i in range(n)]
    if not isinstance(tree, (tuple, list)) or len(tree) != n:
        raise ValueError(f"Model: expected parameters for {n} layers, got {type(tree).__name__}")
    return tuple(tree)


_NEEDS_IO = "saving and loading models needs the convnet-io package"


def _convnet_io():
    """The convnet_io module. An ImportError when the package is not installed; when it is
    but importing it failed (a broken dependency such as h5py), an ImportError naming
    that failure, chained to it."""
    try:
        import convnet_io
    except ModuleNotFoundError as error:
        if error.name != "convnet_io":  # a module convnet_io imports is missing
            raise _io_import_failed(error) from error
        raise ImportError(f"{_NEEDS_IO}: pip install convnet-io") from None
    except Exception as error:  # raised while importing convnet_io or what it imports
        raise _io_import_failed(error) from error
    return convnet_io


def _io_import_failed(error: Exception) -> ImportError:
    return ImportError(
        f"{_NEEDS_IO}, which is installed but failed to import: {type(error).__name__}: {error}"
    )


class ParamsAndGrads:
    """The (param, grad) pairs of a model, for `optimizer.step(model.get_params_and_grads())`.

    Iterating yields (param, grad) leaf pairs for inspection. `Optimizer.step` calls
    `apply_optimizer`, which sets the model's params to the optimizer's pure update.
    """

    def __init__(self, model: Model):
        self.model = model

    def __iter__(self):
        if self.model.grads is None:
            raise ValueError("no gradients yet: call model.backward first")
        return iter(
            zip(_tree.leaves(self.model.params), _tree.leaves(self.model.grads), strict=True)
        )

    def apply_optimizer(self, optimizer: optim.Optimizer) -> None:
        """Set the model's params to `optimizer.update(params, grads, opt_state)`."""
        model = self.model
        if model.grads is None:
            raise ValueError("no gradients yet: call model.backward first")
        if model.opt_state is None or optimizer is not model.optimizer:
            if optimizer is not model.optimizer:
                model.optimizer = optimizer
                model.opt_state = None
            model._ensure_opt_state()
        model.params, model.opt_state = optimizer.update(model.params, model.grads, model.opt_state)


class LossFunction:
    """`model.loss`: the compiled loss in ConvNet-NumPy's stateful style.

        loss_value = model.loss.forward(predictions, targets)   # a float
        grad = model.loss.backward()                            # dLoss/dpredictions

    When the model ends in a softmax and the loss is cross-entropy, the predictions are
    probabilities, and the loss is the cross-entropy of those probabilities, whatever
    produced them (`forward`, `predict`, a copy). When they are what the model's softmax
    just produced in `forward(training=True)`, the loss is computed from the logits
    (stable) and `model.backward(grad)` uses the fused gradient (softmax(z) - t)/N, so the
    softmax is never differentiated twice.
    """

    def __init__(self, model: Model):
        self.model = model
        self._grad = None
        self._fused = None  # (grad object, record, dlogits)

    def forward(self, predictions: Any, targets: Any) -> float:
        """The loss value (a Python float) of `predictions` against `targets`.

        predictions: the model's output (N, *output_shape), e.g. (N, classes); targets:
        integer classes (N,) or one-hot rows (N, classes) for cross-entropy, an array shaped
        like `predictions` for mse and huber. `backward()` then returns dLoss/dpredictions,
        shaped like `predictions`.
        """
        model = self.model
        xp = model.xp
        record = model._record
        self._fused = None
        if model._fused_softmax() and record is not None and predictions is record["output"]:
            value, dlogits = losses.softmax_cross_entropy(record["logits"], targets, xp=xp)
            one_hot = losses._targets_as_one_hot(targets, predictions, xp)
            self._grad = losses.cross_entropy_grad_of_probabilities(one_hot, predictions, xp=xp)
            self._fused = (self._grad, record, dlogits)
        else:
            value, self._grad = self(predictions, targets)
        return float(value)

    def backward(self) -> Any:
        """dLoss/dpredictions from the last `forward`."""
        if self._grad is None:
            raise ValueError("loss.backward: call loss.forward first")
        return self._grad

    def _fused_grad_for(self, grad: Any, record: dict) -> Any:
        if self._fused is not None and grad is self._fused[0] and record is self._fused[1]:
            return self._fused[2]
        return None

    def __call__(self, predictions, targets, *, xp=None):
        """(value, dLoss/dpredictions) of the model's output `predictions` (N,
        *output_shape), converted to an array of `xp` (the model's by default); the
        cross-entropy of probabilities when the model ends in a softmax."""
        model = self.model
        xp = xp or model.xp
        predictions = xp.asarray(predictions)
        if model._fused_softmax():  # the output is softmax(logits), not logits
            return losses.cross_entropy_of_probabilities(predictions, targets, xp=xp)
        return losses.value_and_grad(
            model._loss_fn, predictions, targets, xp=xp, name=model.loss_name
        )
