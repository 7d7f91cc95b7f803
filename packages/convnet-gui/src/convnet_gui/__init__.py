"""convnet-gui: draw a digit and watch a convnet read it.

- `convnet_gui.preprocess` turns a drawing (a Pillow image, dark ink on light paper, any
  size) into an MNIST-like network input, one named step per function. It needs only
  Pillow and NumPy, never tkinter.
- `convnet_gui.predictor` builds the app's `predict_fn(x (1, 1, 28, 28)) -> (10,)` from a
  model file (through convnet_io) or from a network and its pytrees.
- `convnet_gui.app` is the Tk window (`DigitApp`); `apps/mnist_gui.py` starts it.
- `convnet_gui.testing` starts a virtual X display (Xvfb) for tests.

Importing `convnet_gui` itself loads none of these (so not tkinter either).
"""

__version__ = "0.1.0"
