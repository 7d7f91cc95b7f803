"""Draw a digit with the mouse and watch a trained convnet read it.

    uv run apps/mnist_gui.py                       # the model apps/train_mnist.py saved
    uv run apps/mnist_gui.py --model my.h5 --device cuda

Without a model file the window still opens and says how to train one. The window itself
is convnet_gui.app.DigitApp; this program only reads the options and loads the model.
"""

from __future__ import annotations

import pathlib
import sys

import click
from convnet_gui.predictor import DEFAULT_MODEL, MissingModelError, load_predictor


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    default=DEFAULT_MODEL,
    show_default=True,
    help="Model file saved by apps/train_mnist.py (HDF5 or NPZ).",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where the network runs (cuda needs CuPy and a GPU).",
)
def main(model: pathlib.Path, device: str) -> None:
    """Open the drawing window: draw a digit, see the ten probabilities and the network input."""
    try:
        predict_fn, message = load_predictor(model, device), None
    except MissingModelError as error:
        predict_fn, message = None, str(error)
        click.echo(message, err=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise click.ClickException(f"cannot use the model {model} on {device}: {error}") from error

    try:
        from convnet_gui.app import run
    except ImportError as error:  # Python built without Tk
        raise click.ClickException(
            f"the GUI needs Tk ({error}); on Debian/Ubuntu: apt-get install python3-tk"
        ) from error
    import tkinter

    try:
        run(predict_fn, message=message)
    except tkinter.TclError as error:  # no display
        raise click.ClickException(f"cannot open a window: {error}") from error


if __name__ == "__main__":
    sys.exit(main())
