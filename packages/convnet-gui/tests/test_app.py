"""The drawing window under Xvfb, driven with generated mouse and key events.

These tests use the reference model (tests/data/reference_mnist.h5) or a stand-in
predict function, and check what the widgets show against the model's own output.
"""

from __future__ import annotations

import pathlib
import re
import time

import numpy
import pytest
from convnet_gui.preprocess import to_mnist

pytestmark = pytest.mark.gui

REFERENCE_MODEL = pathlib.Path(__file__).parent / "data" / "reference_mnist.h5"
# A "7" in fractions of the canvas side: a top bar, then a diagonal down to the left.
SEVEN = [(0.25, 0.2), (0.75, 0.2), (0.55, 0.5), (0.4, 0.85)]


@pytest.fixture
def tk_root(display):
    import tkinter

    root = tkinter.Tk()
    root.geometry("900x700+0+0")
    root.update()
    yield root
    root.destroy()


@pytest.fixture(scope="module")
def reference_predict():
    from convnet_gui.predictor import load_predictor

    return load_predictor(REFERENCE_MODEL)


def make_app(root, predict_fn, **kwargs):
    from convnet_gui.app import DigitApp

    app = DigitApp(root, predict_fn, **kwargs)
    root.update()
    return app


def draw(app, fractions, steps=8):
    """Drag the mouse through `fractions` of the canvas side with generated events."""
    side = app.canvas.winfo_width()
    points = [(round(fx * side), round(fy * side)) for fx, fy in fractions]
    canvas = app.canvas
    canvas.event_generate("<ButtonPress-1>", x=points[0][0], y=points[0][1])
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        for t in numpy.linspace(0, 1, steps + 1)[1:]:
            canvas.event_generate(
                "<B1-Motion>", x=round(x0 + (x1 - x0) * t), y=round(y0 + (y1 - y0) * t)
            )
    canvas.event_generate("<ButtonRelease-1>", x=points[-1][0], y=points[-1][1])
    app.master.update()
    return points


def shown_bars(app) -> numpy.ndarray:
    """The bar lengths on screen, as fractions of a full bar: (10,)."""
    lengths = []
    for item in app.bar_items:
        x0, _, x1, _ = app.bars.coords(item)
        lengths.append((x1 - x0) / app.bar_length)
    return numpy.array(lengths)


def shown_top3(app) -> list[tuple[int, float]]:
    """The top-three text parsed back: [(digit, percent), ...]."""
    rows = re.findall(r"^\d\. (\d)\s+([\d.]+)%$", app.top3_var.get(), flags=re.M)
    return [(int(d), float(p)) for d, p in rows]


def ink_mask(image) -> numpy.ndarray:
    return numpy.asarray(image.convert("L")) < 128


def test_a_stroke_is_mirrored_and_read_like_the_model_reads_the_image(
    tk_root, reference_predict, display
):
    from PIL import ImageGrab

    app = make_app(tk_root, reference_predict)
    points = draw(app, SEVEN)

    # The internal image holds the stroke where it was drawn, relative to the canvas.
    image = numpy.asarray(app.image)
    for x, y in points:
        ix, iy = app.to_image_coords(x, y)
        assert image[round(iy), round(ix)] == 0
    assert image[-5, 5] == 255 and image[5, -5] == 255

    # ... and the same as what the Tk canvas shows (a screenshot of the canvas, shrunk).
    left, top = app.canvas.winfo_rootx(), app.canvas.winfo_rooty()
    side = app.canvas.winfo_width()
    shot = ImageGrab.grab(bbox=(left, top, left + side, top + side), xdisplay=display)
    shown = ink_mask(shot.resize(app.image.size))
    mirrored = ink_mask(app.image)
    overlap = (shown & mirrored).sum() / (shown | mirrored).sum()
    assert overlap > 0.9, overlap

    # What the window shows is the model's output on the mirrored image.
    x = to_mnist(app.image)
    numpy.testing.assert_array_equal(app.network_input, x)
    expected = reference_predict(x)
    numpy.testing.assert_allclose(shown_bars(app), expected, atol=1e-9)
    best = numpy.argsort(-expected, kind="stable")[:3]
    assert shown_top3(app) == [(int(d), round(100 * expected[d], 1)) for d in best]
    assert app.status_var.get() == f"It looks like a {best[0]}"
    assert best[0] == 7  # the reference model reads the drawn seven


def test_clear_button_and_keys_reset_everything(tk_root, reference_predict):
    from convnet_gui.app import BLANK_MESSAGE

    app = make_app(tk_root, reference_predict)
    for clear in (
        app.clear_button.invoke,
        lambda: app.canvas.event_generate("<KeyPress-Escape>"),
        lambda: app.canvas.event_generate("<KeyPress-c>"),
        lambda: app.canvas.event_generate("<KeyPress-Delete>"),
    ):
        draw(app, SEVEN)
        assert shown_bars(app).sum() == pytest.approx(1.0)
        app.canvas.focus_force()
        tk_root.update()
        clear()
        tk_root.update()
        assert numpy.asarray(app.image).min() == 255
        assert app.canvas.find_withtag("ink") == ()
        assert app.strokes == []
        assert shown_bars(app).tolist() == [0.0] * 10
        assert app.top3_var.get() == ""
        assert app.status_var.get() == BLANK_MESSAGE
        assert app.network_input is None and app.probabilities is None


def test_resizing_keeps_strokes_aligned(tk_root, reference_predict):
    app = make_app(tk_root, reference_predict)
    small_side = app.canvas.winfo_width()
    draw(app, SEVEN)
    before = numpy.asarray(app.image).copy()
    first_item = app.canvas.find_withtag("ink")[0]
    coords_small = numpy.array(app.canvas.coords(first_item))

    tk_root.geometry("1200x1000")
    tk_root.update()
    large_side = app.canvas.winfo_width()
    assert large_side > small_side * 1.3
    assert app.canvas.winfo_height() == large_side  # still square
    # The stroke drawn before is redrawn at the new scale, in the same relative place.
    first_item = app.canvas.find_withtag("ink")[0]
    numpy.testing.assert_allclose(
        numpy.array(app.canvas.coords(first_item)) / large_side,
        coords_small / small_side,
        atol=0.01,
    )
    numpy.testing.assert_array_equal(numpy.asarray(app.image), before)

    # A new stroke at the same relative position lands at the same place in the image.
    app.clear()
    draw(app, SEVEN)
    after = numpy.asarray(app.image)
    a, b = before < 128, after < 128
    assert (a & b).sum() / (a | b).sum() > 0.9
    centre_a = numpy.argwhere(a).mean(axis=0)
    centre_b = numpy.argwhere(b).mean(axis=0)
    numpy.testing.assert_allclose(centre_a, centre_b, atol=1.5)


def test_predictions_while_drawing_are_throttled(tk_root):
    calls = []

    def predict(x):
        calls.append(time.monotonic())
        return numpy.full(10, 0.1)

    app = make_app(tk_root, predict, throttle_ms=150)
    canvas = app.canvas
    canvas.event_generate("<ButtonPress-1>", x=100, y=100)
    for step in range(40):  # events handled at once, with no time for the event loop
        canvas.event_generate("<B1-Motion>", x=100 + 4 * step, y=100 + 2 * step)
    assert calls == []  # nothing computed inside the event handlers
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        tk_root.update()
        time.sleep(0.01)
    assert len(calls) == 1  # one prediction for the whole burst of motion
    canvas.event_generate("<B1-Motion>", x=300, y=200)
    canvas.event_generate("<ButtonRelease-1>", x=300, y=200)
    assert len(calls) == 2  # releasing predicts at once, and cancels the pending one
    time.sleep(0.3)
    tk_root.update()
    assert len(calls) == 2


def test_without_a_model_the_window_says_how_to_train_one(tk_root):
    message = (
        "No model at models/mnist.h5 \N{EM DASH} train one first with: uv run apps/train_mnist.py"
    )
    app = make_app(tk_root, None, message=message)
    assert app.status_var.get() == message
    draw(app, SEVEN)
    assert app.status_var.get() == message
    assert shown_bars(app).tolist() == [0.0] * 10
    numpy.testing.assert_array_equal(app.network_input, to_mnist(app.image))  # still shown


def test_blank_canvas_and_a_failing_model_give_messages(tk_root):
    from convnet_gui.app import BLANK_MESSAGE

    def broken(x):
        raise RuntimeError("shape mismatch in layer 3")

    app = make_app(tk_root, broken)
    app.predict_now()
    assert app.status_var.get() == BLANK_MESSAGE
    draw(app, SEVEN)
    assert app.status_var.get() == "Prediction failed: shape mismatch in layer 3"
    assert shown_bars(app).tolist() == [0.0] * 10

    app.predict_fn = lambda x: numpy.ones(7) / 7
    app.predict_now()
    assert app.status_var.get() == "Prediction failed: the model gave 7 outputs, expected 10"


def test_a_failing_model_prints_its_traceback_once_not_per_stroke(tk_root, capsys):
    def broken(x):
        raise RuntimeError("shape mismatch in layer 3")

    app = make_app(tk_root, broken, throttle_ms=1)
    for _ in range(3):
        draw(app, SEVEN)  # a throttled prediction while drawing, one on release
        time.sleep(0.01)
        tk_root.update()
        app.clear()
    draw(app, SEVEN)
    assert app.status_var.get() == "Prediction failed: shape mismatch in layer 3"
    stderr = capsys.readouterr().err
    assert stderr.count("Traceback") == 1, stderr
    assert stderr.rstrip().endswith("RuntimeError: shape mismatch in layer 3")


def outside_the_window(app) -> list[str]:
    """The panel's widgets that reach past the window's right or bottom edge."""
    root = app.master
    width, height = root.winfo_width(), root.winfo_height()
    widgets = {
        "clear button": app.clear_button,
        "bars": app.bars,
        "network input": app.input_view,
        **{f"step {i}": view for i, view in enumerate(app.step_views)},
    }
    return [
        name
        for name, widget in widgets.items()
        if widget.winfo_rootx() - root.winfo_rootx() + widget.winfo_width() > width
        or widget.winfo_rooty() - root.winfo_rooty() + widget.winfo_height() > height
    ]


def test_every_panel_widget_shows_at_the_minimum_size_and_on_a_laptop_screen(tk_root):
    app = make_app(tk_root, None)
    min_width, min_height = tk_root.minsize()
    # the minimum comes from the widgets themselves: the panel and a usable canvas
    assert min_height >= app.clear_button.master.winfo_reqheight()
    assert tk_root.winfo_reqheight() <= 650  # fits a 1366x768 screen with a title bar
    for width, height in ((min_width, min_height), (800, 600), (1366, 650), (1024, 560)):
        tk_root.geometry(f"{max(width, min_width)}x{max(height, min_height)}")
        tk_root.update()
        assert outside_the_window(app) == [], (width, height)
        assert app.canvas.winfo_width() >= 200, (width, height)  # room left to draw
    tk_root.geometry("300x200")  # smaller than the minimum: Tk keeps the minimum
    tk_root.update()
    assert (tk_root.winfo_width(), tk_root.winfo_height()) == (min_width, min_height)
    assert outside_the_window(app) == []


def test_a_long_message_grows_the_minimum_size(tk_root):
    app = make_app(tk_root, None)
    _, min_height = tk_root.minsize()
    app.predict_fn = lambda x: (_ for _ in ()).throw(RuntimeError("a long reason " * 12))
    draw(app, SEVEN)
    assert app.status_var.get().startswith("Prediction failed: a long reason")
    assert tk_root.minsize()[1] > min_height
    tk_root.geometry(f"{tk_root.minsize()[0]}x{tk_root.minsize()[1]}")
    tk_root.update()
    assert outside_the_window(app) == []
