"""Evaluate a saved model on the MNIST test set: `uv run apps/evaluate.py models/mnist.h5`.

Prints the accuracy, the loss and the confusion matrix, and saves a PNG grid of the test
digits the model got wrong with the most confidence (needs matplotlib).
"""

from __future__ import annotations

import pathlib
import sys

_APPS = str(pathlib.Path(__file__).resolve().parent)
if _APPS not in sys.path:  # `python apps/evaluate.py` adds it; -P or PYTHONSAFEPATH do not
    sys.path.insert(0, _APPS)

import click  # noqa: E402
from _common import (  # noqa: E402
    AppError,
    FileUse,
    blas_description,
    check_distinct_files,
    check_writable,
    companion_path,
    confusion_matrix,
    data_option,
    existing_model_file,
    format_confusion,
    image_grid,
    import_modules,
    import_option,
    import_pyplot,
    load_mnist_test,
    load_model,
    lowest_accuracy,
    model_loss,
    outputs_are_probabilities,
    per_class_accuracy,
    plural,
    run_command,
    save_figure,
    set_blas_threads,
    threads_option,
    to_inputs,
)

PROG = "evaluate.py"


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=pathlib.Path))
@data_option
@click.option(
    "--wrong",
    "wrong_path",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    help="Where to save the grid of confidently wrong digits (default: NAME.wrong.png "
    "beside MODEL).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1, max=400),
    default=36,
    show_default=True,
    help="How many wrong digits the grid shows at most.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Digits per forward pass.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where to compute: cuda needs CuPy and a GPU; auto uses one when usable.",
)
@threads_option
@import_option
@click.option(
    "--limit-test",
    type=click.IntRange(min=1),
    help="Evaluate on the first N test digits only (quick runs and tests).",
)
def main(model_path, data_dir, wrong_path, count, batch_size, device, threads, imports, limit_test):
    """Accuracy, loss and confusion matrix of MODEL on the MNIST test set, and a PNG of the
    test digits it got wrong with the highest confidence."""
    set_blas_threads(threads)  # before NumPy is imported
    import_modules(imports)
    import convnet_core as cn
    import numpy

    if wrong_path is None:
        wrong_path = companion_path(model_path, ".wrong.png")
    check_distinct_files(
        [FileUse(wrong_path, "the PNG of wrong digits", "--wrong")],
        [FileUse(model_path, "the model MODEL", model=True)],
    )
    check_writable(wrong_path)
    existing_model_file(model_path)  # before the device is chosen and announced
    xp = cn.backend.array_module(device)
    click.echo(f"device: {cn.backend.device_name(xp)}; {blas_description()}")
    model = load_model(model_path, xp)  # an AppError unless it takes MNIST digits
    outputs_shape = tuple(model.network.output_shape(model.input_shape))
    if outputs_shape != (10,):
        raise AppError(
            f"{model_path}: not an MNIST classifier: expected 10 outputs per digit (one per "
            f"class), but it gives shape {outputs_shape}"
        )
    test_set = load_mnist_test(data_dir, limit_test)
    x = to_inputs(test_set.images)  # (N, 1, 28, 28)
    labels = numpy.asarray(test_set.labels)

    outputs = numpy.asarray(cn.backend.to_host(model.predict(x, batch_size=batch_size)))
    predicted = outputs.argmax(axis=1)
    loss = model_loss(model, outputs, labels)
    accuracy = float((predicted == labels).mean())
    matrix = confusion_matrix(labels, predicted)

    click.echo(f"test digits: {len(labels)}")
    click.echo(f"test accuracy: {100 * accuracy:.2f}%  {describe_loss(model, loss)}")
    click.echo("confusion matrix (rows: true digit, columns: predicted):")
    click.echo(format_confusion(matrix))
    worst = lowest_accuracy(per_class_accuracy(matrix), 3)
    click.echo("lowest accuracy: " + ", ".join(f"digit {d}" for d in worst))

    wrong = numpy.flatnonzero(predicted != labels)
    confidence = outputs[wrong, predicted[wrong]]
    wrong = wrong[numpy.argsort(-confidence, kind="stable")][:count]
    percent = outputs_are_probabilities(model)
    save_wrong_grid(wrong_path, test_set.images, labels, predicted, outputs, wrong, percent)
    return 0


def describe_loss(model, loss: float | None) -> str:
    """'test loss: 0.0321', naming the loss when it is not the usual cross-entropy."""
    if loss is None:
        return f"test loss: not computed (the model's loss {model.loss_name!r} is not built in)"
    if outputs_are_probabilities(model):
        return f"test loss: {loss:.4f}"
    return f"test loss: {loss:.4f} ({model.loss_name})"


def save_wrong_grid(path, images, labels, predicted, outputs, indices, percent) -> None:
    """A PNG grid of the digits at `indices`, titled 'true -> predicted (confidence)': the
    output of the predicted class, as a percentage when the outputs are probabilities."""
    if len(indices) == 0:
        click.echo("no wrong digits: no grid to draw")
        return
    plt = import_pyplot()
    if plt is None:
        click.echo("matplotlib is not installed: no grid of wrong digits (pip install matplotlib)")
        return
    pictures = [images[i][0] for i in indices]
    scores = [outputs[i, predicted[i]] for i in indices]
    shown = [f"{100 * score:.0f}%" if percent else f"{score:.2f}" for score in scores]
    titles = [
        f"#{i}: {labels[i]}->{predicted[i]} ({score})"
        for i, score in zip(indices, shown, strict=True)
    ]
    figure = image_grid(plt, pictures, titles, columns=min(6, len(pictures)))
    figure.suptitle("most confidently wrong test digits (true -> predicted)", fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)
    click.echo(f"the {plural(len(indices), 'most confidently wrong digit')}: {path}")


if __name__ == "__main__":
    sys.exit(run_command(main, PROG))
