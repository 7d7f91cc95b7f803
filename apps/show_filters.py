"""Look inside a trained model: `uv run apps/show_filters.py models/mnist.h5`.

Saves two PNGs beside the model: the kernels of its first Conv2D layer (NAME.filters.png)
and what that layer (with the BatchNorm and activation right after it) makes of one test digit
(NAME.features.png). The first Conv2D is looked for inside Sequential and Residual blocks
too. Both images are computed before either is written, so a failure leaves neither.
Needs matplotlib.
"""

from __future__ import annotations

import pathlib
import sys

_APPS = str(pathlib.Path(__file__).resolve().parent)
if _APPS not in sys.path:  # `python apps/show_filters.py` adds it; -P or PYTHONSAFEPATH do not
    sys.path.insert(0, _APPS)

import click  # noqa: E402
from _common import (  # noqa: E402
    AppError,
    FileUse,
    check_distinct_files,
    check_writable,
    companion_path,
    data_option,
    image_grid,
    import_modules,
    import_option,
    import_pyplot,
    load_mnist_test,
    load_model,
    plural,
    run_command,
    save_figure,
    set_blas_threads,
    threads_option,
    to_inputs,
)

PROG = "show_filters.py"
#: Layers drawn together with the first conv: what it feeds straight into, pixel by pixel.
FOLLOWERS = ("BatchNorm2D", "Activation")


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=pathlib.Path))
@click.option(
    "--digit",
    "index",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Index of the test digit whose feature maps are drawn.",
)
@data_option
@click.option(
    "--filters",
    "filters_path",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    help="Where to save the filters PNG (default: NAME.filters.png beside MODEL).",
)
@click.option(
    "--features",
    "features_path",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    help="Where to save the feature-maps PNG (default: NAME.features.png beside MODEL).",
)
@threads_option
@import_option
def main(model_path, index, data_dir, filters_path, features_path, threads, imports):
    """Save the first conv layer's filters of MODEL and one test digit's feature maps as PNGs."""
    set_blas_threads(threads)  # before NumPy is imported
    import_modules(imports)
    import numpy

    filters_path = filters_path or companion_path(model_path, ".filters.png")
    features_path = features_path or companion_path(model_path, ".features.png")
    check_distinct_files(
        [
            FileUse(filters_path, "the filters PNG", "--filters"),
            FileUse(features_path, "the feature-maps PNG", "--features"),
        ],
        [FileUse(model_path, "the model MODEL", model=True)],
    )
    check_writable(filters_path)
    check_writable(features_path)

    model = load_model(model_path, numpy)  # an AppError unless it takes MNIST digits
    plt = import_pyplot()
    if plt is None:
        raise AppError("show_filters needs matplotlib to draw: pip install matplotlib")
    path = first_conv_path(model.network)
    if path is None:
        raise AppError(f"{model_path}: the model has no Conv2D layer to show")
    test_set = load_mnist_test(data_dir, limit_test=index + 1)
    if index >= len(test_set.labels):
        raise AppError(f"--digit {index} is past the {plural(len(test_set.labels), 'test digit')}")

    # Everything is computed before the first PNG is written: a failure leaves neither.
    kernels = numpy.asarray(params_at(model.params, path)["W"])  # (filters, channels, kh, kw)
    x = to_inputs(test_set.images[index : index + 1]).astype(model.dtype)  # (1, 1, 28, 28)
    maps, upto = feature_maps(model, path, x)  # (filters, Ho, Wo)
    label = int(test_set.labels[index])

    draw_filters(plt, kernels, filters_path)
    filters = plural(kernels.shape[0], "filter")
    click.echo(f"{filters} of layer {layer_name(path)} (Conv2D): {filters_path}")
    draw_features(plt, x[0, 0], label, maps, features_path, layer_name(upto))
    click.echo(f"feature maps of test digit #{index} (a {label}): {features_path}")
    return 0


# ---------------------------------------------------------------------------------------
# Finding the first conv inside the network
#
# A layer inside combinators is reached by a path of keys, one per combinator: the index
# of a child of a Sequential, or "body" / "shortcut" for a branch of a Residual. The same
# keys pick its params and state out of the model's (a Sequential's are tuples with one
# entry per child, a Residual's dicts {"body": ..., "shortcut": ...}). The model's network
# is a Sequential, so a top-level layer's path is (index,).


def sublayers(layer) -> list:
    """The layers directly inside `layer`, as (key, child) in the order they run: a
    Sequential's children, a Residual's body then its shortcut (when it has one); none for
    a layer that holds no layers."""
    from convnet_core.layers import Residual, Sequential

    if isinstance(layer, Sequential):
        return list(enumerate(layer.layers))
    if isinstance(layer, Residual):
        branches = (("body", layer.body), ("shortcut", layer.shortcut))
        return [(key, child) for key, child in branches if child is not None]
    return []


def first_conv_path(layer, path: tuple = ()) -> tuple | None:
    """The path to the first Conv2D inside `layer` (depth first, in the order the layers
    run), or None when it holds none."""
    if type(layer).__name__ == "Conv2D":
        return path
    for key, child in sublayers(layer):
        found = first_conv_path(child, (*path, key))
        if found is not None:
            return found
    return None


def params_at(tree, path: tuple):
    """The params (or state) of the layer at `path`, from the model's whole tree."""
    for key in path:
        tree = tree[key]
    return tree


def layer_name(path: tuple) -> str:
    """How the output names the layer at `path`: "3" at the top level, "1.body.0" inside."""
    return ".".join(str(key) for key in path)


def feature_maps(model, path: tuple, x):
    """Run `x` (1, C, H, W) through the conv at `path` and the BatchNorm/Activation layers
    right after it in its Sequential, after every layer the input meets before it.

    Going down the path, the earlier children of each Sequential run first; a Residual
    hands its own input to the branch. Returns the maps (filters, Ho, Wo) and the path of
    the last layer applied.
    """
    import convnet_core as cn
    import numpy
    from convnet_core.layers import Sequential

    def run(holder, key, params, state, x):
        child = dict(sublayers(holder))[key]
        y, _, _ = cn.apply(child, params[key], state[key], x, training=False, xp=numpy)
        return y

    holder, params, state = model.network, model.params, model.state
    *outer, conv = path
    for key in outer:
        if isinstance(holder, Sequential):
            for earlier in range(key):
                x = run(holder, earlier, params, state, x)
        holder, params, state = dict(sublayers(holder))[key], params[key], state[key]
    upto = conv
    if isinstance(holder, Sequential):
        while upto + 1 < len(holder.layers) and (
            type(holder.layers[upto + 1]).__name__ in FOLLOWERS
        ):
            upto += 1
        keys = range(upto + 1)  # the earlier children, the conv and its followers
    else:
        keys = (conv,)
    for key in keys:
        x = run(holder, key, params, state, x)
    return numpy.asarray(x[0]), (*outer, upto)


def draw_filters(plt, kernels, path) -> None:
    """One small image per (filter, input channel) kernel, on a shared grey scale per filter."""
    pictures, titles = [], []
    for number, kernel in enumerate(kernels):
        for channel, plane in enumerate(kernel):
            pictures.append(plane)
            titles.append(f"filter {number}" + (f" ch {channel}" if kernels.shape[1] > 1 else ""))
    figure = image_grid(plt, pictures, titles, columns=min(8, len(pictures)), size=1.2)
    figure.suptitle("first conv layer: kernels (light = positive weight)", fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)


def draw_features(plt, digit, label, maps, path, upto: str) -> None:
    """The input digit followed by each feature map the first conv layer makes of it;
    `upto` names the last layer applied."""
    pictures = [digit, *maps]
    titles = [f"input (a {label})", *[f"map {i}" for i in range(len(maps))]]
    figure = image_grid(plt, pictures, titles, columns=min(9, len(pictures)), cmap="viridis")
    figure.suptitle(f"feature maps after layer {upto}", fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)


if __name__ == "__main__":
    sys.exit(run_command(main, PROG))
