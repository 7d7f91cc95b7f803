"""Look inside a trained model: `uv run apps/show_filters.py models/mnist.h5`.

Saves two PNGs beside the model: the kernels of its first Conv2D layer (NAME.filters.png)
and what that layer (with the BatchNorm and activation right after it) makes of one test digit
(NAME.features.png). Needs matplotlib.
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
    check_writable_dir,
    companion_path,
    data_option,
    image_grid,
    import_pyplot,
    load_mnist_data,
    load_model,
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
def main(model_path, index, data_dir, filters_path, features_path, threads):
    """Save the first conv layer's filters of MODEL and one test digit's feature maps as PNGs."""
    set_blas_threads(threads)  # before NumPy is imported
    import numpy

    filters_path = filters_path or companion_path(model_path, ".filters.png")
    features_path = features_path or companion_path(model_path, ".features.png")
    check_writable_dir(filters_path)
    check_writable_dir(features_path)

    model = load_model(model_path, numpy)
    plt = import_pyplot()
    if plt is None:
        raise AppError("show_filters needs matplotlib to draw: pip install matplotlib")
    position = first_conv_position(model.network.layers)
    if position is None:
        raise AppError(f"{model_path}: the model has no Conv2D layer to show")
    _, test_set = load_mnist_data(data_dir, limit_train=1, limit_test=index + 1)
    if index >= len(test_set.labels):
        raise AppError(f"--digit {index} is past the {len(test_set.labels)} test digits")

    kernels = numpy.asarray(model.params[position]["W"])  # (filters, channels, kh, kw)
    draw_filters(plt, kernels, filters_path)
    click.echo(f"{kernels.shape[0]} filters of layer {position} (Conv2D): {filters_path}")

    x = to_inputs(test_set.images[index : index + 1])  # (1, 1, 28, 28)
    maps, upto = feature_maps(model, position, x)  # (filters, Ho, Wo)
    label = int(test_set.labels[index])
    draw_features(plt, x[0, 0], label, maps, features_path, upto)
    click.echo(f"feature maps of test digit #{index} (a {label}): {features_path}")
    return 0


def first_conv_position(layers) -> int | None:
    """Index of the first Conv2D among the model's top-level layers, or None."""
    for position, layer in enumerate(layers):
        if type(layer).__name__ == "Conv2D":
            return position
    return None


def feature_maps(model, position: int, x):
    """Run `x` (1, C, H, W) through the first conv and the BatchNorm/activation right after it.

    Returns the maps (filters, Ho, Wo) and the index of the last layer applied.
    """
    import convnet_core as cn
    import numpy

    layers = model.network.layers
    upto = position
    while upto + 1 < len(layers) and type(layers[upto + 1]).__name__ in FOLLOWERS:
        upto += 1
    for layer, params, state in zip(
        layers[: upto + 1], model.params[: upto + 1], model.state[: upto + 1], strict=True
    ):
        x, _, _ = cn.apply(layer, params, state, x, training=False, xp=numpy)
    return numpy.asarray(x[0]), upto


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


def draw_features(plt, digit, label, maps, path, upto) -> None:
    """The input digit followed by each feature map the first conv layer makes of it."""
    pictures = [digit, *maps]
    titles = [f"input (a {label})", *[f"map {i}" for i in range(len(maps))]]
    figure = image_grid(plt, pictures, titles, columns=min(9, len(pictures)), cmap="viridis")
    figure.suptitle(f"feature maps after layer {upto}", fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)


if __name__ == "__main__":
    sys.exit(run_command(main, PROG))
