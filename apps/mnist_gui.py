"""Draw a digit with the mouse and watch a trained convnet read it.

    uv run apps/mnist_gui.py                       # the model apps/train_mnist.py saved
    uv run apps/mnist_gui.py --model my.h5 --device cuda

Without a model file the window still opens and says how to train one. The window itself
is convnet_gui.app.DigitApp; this program only reads the options and loads the model.
Errors follow the other apps' rules: one line `mnist_gui.py: error: ...`, exit status 1
(2 for bad arguments), and the traceback first when CONVNET_DEBUG is set.
"""

from __future__ import annotations

import pathlib
import sys

_APPS = str(pathlib.Path(__file__).resolve().parent)
if _APPS not in sys.path:  # `python apps/mnist_gui.py` adds it; -P or PYTHONSAFEPATH do not
    sys.path.insert(0, _APPS)

import click  # noqa: E402
from _common import (  # noqa: E402
    AppError,
    import_modules,
    import_option,
    one_line,
    run_command,
    set_blas_threads,
    threads_option,
    unknown_layer_hint,
)

PROG = "mnist_gui.py"
#: What --model defaults to: convnet_gui.predictor.DEFAULT_MODEL, where train_mnist.py
#: saves. The predictor module loads NumPy, so it is imported only after --threads is applied.
DEFAULT_MODEL_SHOWN = "models/mnist.h5"


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--model",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    help="Model file saved by apps/train_mnist.py (HDF5 or NPZ) "
    f"[default: {DEFAULT_MODEL_SHOWN}, where train_mnist.py saves it].",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where the network runs: cuda needs CuPy and a GPU; auto uses one when usable.",
)
@threads_option
@import_option
def main(model: pathlib.Path | None, device: str, threads: int, imports: tuple[str, ...]) -> int:
    """Open the drawing window: draw a digit, see the ten probabilities and the network input."""
    set_blas_threads(threads)  # before NumPy is imported
    import_modules(imports)
    from convnet_gui.predictor import DEFAULT_MODEL, MissingModelError, load_predictor

    model = DEFAULT_MODEL if model is None else model
    try:
        predict_fn, message = load_predictor(model, device), None
    except MissingModelError as error:
        predict_fn, message = None, str(error)
        click.echo(message, err=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise AppError(
            f"cannot use the model {model} on {device}: {one_line(error)}"
            + unknown_layer_hint(error)
        ) from error

    try:
        from convnet_gui.app import run
    except ImportError as error:  # Python built without Tk
        raise AppError(
            f"the GUI needs Tk ({error}); on Debian/Ubuntu: apt-get install python3-tk"
        ) from error
    import tkinter

    try:
        run(predict_fn, message=message)
    except tkinter.TclError as error:  # no display
        raise AppError(f"cannot open a window: {one_line(error)}") from error
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, PROG))
