"""Export a convnet model to ONNX (needs the optional `onnx` extra: pip install convnet-io[onnx]).

Every layer maps to standard ONNX operators (opset 17), for inference:

    Conv2D -> Conv (pads from the layer's own "same"/"valid"/int rule)
    Activation -> Relu, LeakyRelu, Sigmoid, Tanh, Softmax (last axis), and gelu (tanh
        approximation) spelled out with Mul/Add/Tanh
    MaxPool2D -> MaxPool, AvgPool2D -> AveragePool, GlobalAvgPool2D -> GlobalAveragePool +
        Flatten, BatchNorm2D -> BatchNormalization (running statistics), Dense -> Gemm (or
        MatMul without bias), Flatten -> Flatten, Dropout -> Identity,
    Sequential -> its layers in a chain, Residual -> body, shortcut, Add.

The graph's input is "input" of shape (N, *input_shape) with a free batch size N, and its
output "output".
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy

from .atomic import atomic_path
from .torch_convert import _host, _parts

__all__ = ["OPSET", "export_onnx"]

OPSET = 17


class _Graph:
    """Collects nodes and initializers with unique names while the network is walked."""

    def __init__(self, helper, numpy_helper, dtype):
        self.helper, self.numpy_helper, self.dtype = helper, numpy_helper, dtype
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def constant(self, stem: str, value: Any, dtype: Any = None) -> str:
        name = self.name(stem)
        array = numpy.asarray(_host(value), dtype=dtype or self.dtype)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], **attributes: Any) -> str:
        output = self.name(op.lower())
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


def _gelu(g: _Graph, x: str) -> str:
    """0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), as convnet's gelu computes it."""
    x3 = g.node("Mul", [g.node("Mul", [x, x]), x])
    inner = g.node("Add", [x, g.node("Mul", [x3, g.constant("gelu_k", 0.044715)])])
    t = g.node("Tanh", [g.node("Mul", [inner, g.constant("gelu_c", math.sqrt(2.0 / math.pi))])])
    one_plus = g.node("Add", [t, g.constant("one", 1.0)])
    return g.node("Mul", [g.node("Mul", [x, one_plus]), g.constant("half", 0.5)])


def _activation(g: _Graph, layer: Any, x: str) -> str:
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
    if layer.name in simple:
        return g.node(simple[layer.name], [x])
    if layer.name == "leaky_relu":
        return g.node("LeakyRelu", [x], alpha=float(layer.alpha))
    if layer.name == "softmax":
        return g.node("Softmax", [x], axis=-1)
    if layer.name == "gelu":
        return _gelu(g, x)
    raise ValueError(f"export_onnx: no ONNX form for the activation {layer.name!r}")


def _emit(g: _Graph, layer: Any, params: Any, state: Any, x: str, shape: tuple) -> str:
    """Add the nodes computing `layer` on the tensor `x` of per-sample `shape`; its output."""
    from convnet_core import layers as L

    if isinstance(layer, L.Sequential):
        for child, p, s in zip(layer.layers, params, state, strict=True):
            x = _emit(g, child, p, s, x, shape)
            shape = tuple(child.output_shape(shape))
        return x
    if isinstance(layer, L.Residual):
        body = _emit(g, layer.body, params["body"], state["body"], x, shape)
        short = x
        if layer.shortcut is not None:
            short = _emit(g, layer.shortcut, params["shortcut"], state["shortcut"], x, shape)
        return g.node("Add", [body, short])
    if isinstance(layer, L.Conv2D):
        top, bottom, left, right = layer.pads(shape[1], shape[2])
        inputs = [x, g.constant("W", params["W"])]  # (out, in, kh, kw), as ONNX wants
        if layer.use_bias:
            inputs.append(g.constant("b", params["b"]))
        return g.node(
            "Conv",
            inputs,
            kernel_shape=list(layer.kernel_size),
            strides=list(layer.stride),
            pads=[top, left, bottom, right],
        )
    if isinstance(layer, L.Dense):
        w = g.constant("W", params["W"])  # (in, out)
        if layer.use_bias:
            return g.node("Gemm", [x, w, g.constant("b", params["b"])])
        return g.node("MatMul", [x, w])
    if isinstance(layer, L.BatchNorm2D):
        inputs = [
            x,
            g.constant("gamma", params["gamma"]),
            g.constant("beta", params["beta"]),
            g.constant("running_mean", state["running_mean"]),
            g.constant("running_var", state["running_var"]),
        ]
        return g.node("BatchNormalization", inputs, epsilon=float(layer.eps))
    if isinstance(layer, (L.MaxPool2D, L.AvgPool2D)):
        op = "MaxPool" if isinstance(layer, L.MaxPool2D) else "AveragePool"
        return g.node(op, [x], kernel_shape=list(layer.pool_size), strides=list(layer.strides))
    if isinstance(layer, L.GlobalAvgPool2D):
        return g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)  # (N, C)
    if isinstance(layer, L.Flatten):
        return g.node("Flatten", [x], axis=1)
    if isinstance(layer, L.Dropout):
        return g.node("Identity", [x])  # inference: dropout does nothing
    if isinstance(layer, L.Activation):
        return _activation(g, layer, x)
    raise ValueError(f"export_onnx: no ONNX form for {type(layer).__name__}")


def export_onnx(
    model: Any, path: str | bytes | os.PathLike, *, input_shape=None, opset: int = OPSET
):
    """Write `model` as an ONNX graph to `path` (atomically) and return the path.

    `model` is a `convnet_core.Model`, a `SavedModel` or a (layer, params, state[,
    input_shape]) tuple; `input_shape` (per sample) is needed when the model has none.
    The graph computes what `apply(..., training=False)` does (see the module docstring).
    """
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ImportError(
            "export_onnx needs the onnx package: pip install convnet-io[onnx]"
        ) from None
    layer, params, state, saved_shape = _parts(model)
    shape = tuple(int(d) for d in (input_shape or saved_shape or ()))
    if not shape:
        raise ValueError("export_onnx: the model has no input shape; pass input_shape=(C, H, W)")
    from convnet_core import tree

    leaves = [_host(leaf) for leaf in tree.leaves(params)]
    dtype = next((leaf.dtype for leaf in leaves if leaf.dtype.kind == "f"), numpy.dtype("float32"))
    graph = _Graph(helper, numpy_helper, dtype)
    out = _emit(graph, layer, params, state, "input", shape)
    graph.nodes.append(helper.make_node("Identity", [out], ["output"], name="output"))
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    out_shape = tuple(layer.output_shape(shape))
    onnx_graph = helper.make_graph(
        graph.nodes,
        "convnet",
        [helper.make_tensor_value_info("input", elem, ["N", *shape])],
        [helper.make_tensor_value_info("output", elem, ["N", *out_shape])],
        initializer=graph.initializers,
    )
    onnx_model = helper.make_model(
        onnx_graph, producer_name="convnet-io", opset_imports=[helper.make_opsetid("", opset)]
    )
    onnx_model.ir_version = min(onnx_model.ir_version, 8)  # readable by older runtimes too
    onnx.checker.check_model(onnx_model)
    path = os.fsdecode(path)
    with atomic_path(path) as temporary:
        onnx.save(onnx_model, temporary)
    return path
