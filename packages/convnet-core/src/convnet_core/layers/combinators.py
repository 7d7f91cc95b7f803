"""Combinators: layers built from layers. They follow the same protocol as any layer."""

from __future__ import annotations

from typing import Any

import attrs

from .base import (
    ProtocolError,
    ShapeError,
    apply_with_tape,
    check_count,
    check_keys,
    check_layer,
    check_output,
    grad_from_tape,
    init_layer,
    output_disagreement,
    register_layer,
)

_PATHS = frozenset({"body", "shortcut"})  # the keys of a Residual's params and state


def _as_layer_tuple(layers: Any) -> tuple:
    return tuple(check_layer(layer, f"Sequential layer {i}") for i, layer in enumerate(layers))


def _check_body(_instance, _attribute, value: Any) -> None:
    check_layer(value, "Residual body")


def _check_shortcut(_instance, _attribute, value: Any) -> None:
    if value is not None:  # None: the identity
        check_layer(value, "Residual shortcut")


@register_layer
@attrs.frozen
class Sequential:
    """Children applied one after another.

    params and state are tuples with one entry per child (an empty dict for a child that
    has none); the cache is a tuple with one `Tape` per child (its cache and the shapes of
    its input and output), so that the backward pass checks every child's gradients.
    """

    layers: tuple = attrs.field(converter=_as_layer_tuple)
    holds_layers = True  # (not a field) its state is its children's, each checked in apply

    @property
    def short_name(self) -> str:
        """The name errors give it: "Sequential(Conv2D, Flatten, Dense)"."""
        return f"Sequential({', '.join(type(layer).__name__ for layer in self.layers)})"

    def output_shape(self, input_shape):
        """The input shape passed through every child's output_shape in turn."""
        shape = tuple(input_shape)
        for index, layer in enumerate(self.layers):
            try:
                shape = tuple(layer.output_shape(shape))
            except ShapeError as error:
                raise ShapeError(f"layer {index} of Sequential: {error}") from None
        return shape

    def init(self, input_shape, rng, *, xp, dtype):
        """Each child's (params, state), in order: two tuples with one entry per child."""
        params, state = [], []
        shape = tuple(input_shape)
        for index, layer in enumerate(self.layers):
            try:
                p, s = init_layer(layer, shape, rng, xp=xp, dtype=dtype)
                shape = tuple(layer.output_shape(shape))
            except (ShapeError, ProtocolError) as error:
                raise type(error)(f"layer {index} of Sequential: {error}") from None
            params.append(p)
            state.append(s)
        return tuple(params), tuple(state)

    def apply(self, params, state, x, *, training, rng, xp):
        """y = f_k(... f_1(x)); the new state and the cache are tuples, one per child.

        A child whose y is not shaped as its output_shape says is named: the last child
        by `check_output`, any other when the next child cannot take its y.
        """
        check_count(self, "params", params, len(self.layers))
        check_count(self, "state", state, len(self.layers))
        new_state, caches = [], []
        last_input = None  # the input of the child before the current one
        for index, (layer, p, s) in enumerate(zip(self.layers, params, state, strict=True)):
            try:
                y, s, cache = apply_with_tape(layer, p, s, x, training=training, rng=rng, xp=xp)
            except ShapeError as error:
                raise self._blame(index, last_input, x, error) from None
            except ProtocolError as error:
                raise ProtocolError(f"layer {index} of Sequential: {error}") from None
            last_input, x = x, y
            new_state.append(s)
            caches.append(cache)
        if self.layers:
            try:
                check_output(self.layers[-1], last_input.shape, x.shape)
            except ShapeError as error:
                raise ShapeError(f"layer {len(self.layers) - 1} of Sequential: {error}") from None
        return x, tuple(new_state), (tuple(caches) if training else None)

    def _blame(self, index: int, last_input: Any, x: Any, error: ShapeError) -> ShapeError:
        """The error for child `index` refusing `x`, which child `index - 1` returned for
        `last_input`: about that child when x is not what its output_shape says."""
        if index > 0:
            found = output_disagreement(self.layers[index - 1], last_input.shape, x.shape)
            if found is not None:
                return ShapeError(f"layer {index - 1} of Sequential: {found}")
        return ShapeError(f"layer {index} of Sequential: {error}")

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        """The children's grad in reverse order, each dx the dy of the child before.

        dy (N, *output_shape) must have the last child's output shape; every child's
        gradients are checked against its shapes (`grad_from_tape`).
        """
        check_count(self, "params", params, len(self.layers))
        check_count(self, "a cache", cache, len(self.layers))
        grads = [None] * len(self.layers)
        for index in reversed(range(len(self.layers))):
            need_dx = input_grad or index > 0  # the first child's dx only if asked for
            try:
                grads[index], dy = grad_from_tape(
                    self.layers[index], params[index], cache[index], dy, xp=xp, input_grad=need_dx
                )
            except (ShapeError, ProtocolError) as error:
                raise type(error)(f"layer {index} of Sequential: {error}") from None
        return tuple(grads), dy


@register_layer
@attrs.frozen
class Residual:
    """y = body(x) + shortcut(x), with the identity as the default shortcut.

    params and state are dicts {"body": ..., "shortcut": ...} ({} for the identity); the
    cache is (body's Tape, shortcut's Tape or None). The gradient flows down both paths
    and the two input gradients add up.
    """

    body: Any = attrs.field(validator=_check_body)
    shortcut: Any = attrs.field(default=None, validator=_check_shortcut)
    holds_layers = True  # (not a field) its state is its paths', each checked in apply

    @property
    def short_name(self) -> str:
        """The name errors give it: "Residual(body=Sequential, shortcut=None)"."""
        shortcut = type(self.shortcut).__name__ if self.shortcut is not None else None
        return f"Residual(body={type(self.body).__name__}, shortcut={shortcut})"

    def output_shape(self, input_shape):
        """The body's output shape (ShapeError when the shortcut's differs)."""
        try:
            body_shape = tuple(self.body.output_shape(input_shape))
        except ShapeError as error:
            raise _on_path("body", error) from None
        short_shape = tuple(input_shape)
        if self.shortcut is not None:
            try:
                short_shape = tuple(self.shortcut.output_shape(input_shape))
            except ShapeError as error:
                raise _on_path("shortcut", error) from None
        if body_shape != short_shape:
            raise ShapeError(
                f"{type(self).__name__}: the body gives {body_shape} but the shortcut gives "
                f"{short_shape}; add a shortcut layer that maps the input to the body's shape"
            )
        return body_shape

    def init(self, input_shape, rng, *, xp, dtype):
        """params and state {"body": ..., "shortcut": ...} ({} for the identity)."""
        self.output_shape(input_shape)
        try:
            body_params, body_state = init_layer(self.body, input_shape, rng, xp=xp, dtype=dtype)
        except (ShapeError, ProtocolError) as error:
            raise _on_path("body", error) from None
        short_params, short_state = ({}, {})
        if self.shortcut is not None:
            try:
                short_params, short_state = init_layer(
                    self.shortcut, input_shape, rng, xp=xp, dtype=dtype
                )
            except (ShapeError, ProtocolError) as error:
                raise _on_path("shortcut", error) from None
        params = {"body": body_params, "shortcut": short_params}
        state = {"body": body_state, "shortcut": short_state}
        return params, state

    def apply(self, params, state, x, *, training, rng, xp):
        """y = body(x) + shortcut(x) (shortcut = identity by default), same shapes."""
        check_keys(self, "parameter", params, _PATHS)
        check_keys(self, "state entry", state, _PATHS)
        try:
            y, body_state, body_cache = apply_with_tape(
                self.body, params["body"], state["body"], x, training=training, rng=rng, xp=xp
            )
        except (ShapeError, ProtocolError) as error:
            raise _on_path("body", error) from None
        short_state, short_cache = state["shortcut"], None
        if self.shortcut is None:
            s = x
        else:
            try:
                s, short_state, short_cache = apply_with_tape(
                    self.shortcut,
                    params["shortcut"],
                    state["shortcut"],
                    x,
                    training=training,
                    rng=rng,
                    xp=xp,
                )
            except (ShapeError, ProtocolError) as error:
                raise _on_path("shortcut", error) from None
        if y.shape != s.shape:  # output_shape checked the shapes it was built for
            raise self._paths_disagree(x, y, s)
        y = y + s
        new_state = {"body": body_state, "shortcut": short_state}
        return y, new_state, ((body_cache, short_cache) if training else None)

    def _paths_disagree(self, x: Any, y: Any, s: Any) -> ShapeError:
        """The error for a body output y and a shortcut output s of different shapes: about
        the path whose output is not what its output_shape says, when one is not."""
        for path, layer, out in (("body", self.body, y), ("shortcut", self.shortcut, s)):
            found = None if layer is None else output_disagreement(layer, x.shape, out.shape)
            if found is not None:
                return ShapeError(f"{path} of Residual: {found}")
        return ShapeError(
            f"{type(self).__name__}: for an input of shape {tuple(x.shape)} the body gives "
            f"{tuple(y.shape)} but the shortcut gives {tuple(s.shape)}"
        )

    def grad(self, params, cache, dy, *, xp, input_grad=True):
        """dy goes down both paths; dx = dx_body + dx_shortcut, each checked to have the
        input's shape (`grad_from_tape`)."""
        check_keys(self, "parameter", params, _PATHS)
        check_count(self, "a cache", cache, 2, each="path")
        body_cache, short_cache = cache
        try:
            body_grads, dx = grad_from_tape(
                self.body, params["body"], body_cache, dy, xp=xp, input_grad=input_grad
            )
        except (ShapeError, ProtocolError) as error:
            raise _on_path("body", error) from None
        short_grads = {}
        if self.shortcut is None:
            short_dx = dy
        else:
            try:
                short_grads, short_dx = grad_from_tape(
                    self.shortcut, params["shortcut"], short_cache, dy, xp=xp, input_grad=input_grad
                )
            except (ShapeError, ProtocolError) as error:
                raise _on_path("shortcut", error) from None
        if input_grad:
            dx = dx + short_dx
        return {"body": body_grads, "shortcut": short_grads}, dx


def _on_path(path: str, error: Exception) -> Exception:
    """A child's error with the Residual path it came from in front: "body of Residual:
    ...", of the same type (ShapeError, ProtocolError)."""
    return type(error)(f"{path} of Residual: {error}")
