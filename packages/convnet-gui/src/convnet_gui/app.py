"""The drawing window: draw a digit with the mouse and watch the network read it.

`DigitApp(master, predict_fn)` builds the whole window inside a Tk root (or Toplevel):

- a square canvas that keeps its aspect and grows with the window. Every stroke is drawn
  twice: as a round-capped line on the Tk canvas, and into a Pillow image of fixed size
  (`resolution` x `resolution`, in `app.image`) in the same place relative to the canvas.
  The strokes are kept in image coordinates, so a resized canvas redraws them in place;
- predictions while drawing, at most one per `throttle_ms` (scheduled with `after`, so the
  window stays responsive), and one on releasing the button;
- the ten class probabilities as bars, the top three as text, the 28x28 image the network
  receives (enlarged), and the preprocessing steps that made it;
- Clear (the button, or Escape, Delete, BackSpace or "c");
- a message instead of a prediction when there is no model or nothing is drawn.

`predict_fn(x)` takes float32 (1, 1, 28, 28) in [0, 1] and returns 10 probabilities; None
means "no model" (then `message` says why). The window logic lives here, so tests can drive
it with generated events and an injected model; apps/mnist_gui.py only parses options.
"""

from __future__ import annotations

import sys
import tkinter as tk
import traceback
from collections.abc import Callable

import numpy
from PIL import Image, ImageDraw, ImageTk

from . import preprocess

__all__ = ["BLANK_MESSAGE", "DigitApp", "run"]

BLANK_MESSAGE = "Draw a digit (0-9) in the white box"
TITLE = "convnet \N{EM DASH} draw a digit"
INPUT_SCALE = 6  # the 28x28 network input is shown 6 times larger: 168x168 screen pixels
STEP_SIZE = 64  # side of each preprocessing-step thumbnail, in screen pixels
BAR_ROW = 22  # height of one probability bar row, in screen pixels
MIN_CANVAS = 200  # the least canvas side the window's minimum size leaves, in screen pixels
#: How often the event loop wakes up to let Python run its signal handlers (Ctrl+C).
SIGNAL_CHECK_MS = 100
PANEL_BG = "#eceff1"
BAR_COLOUR = "#90a4ae"
TOP_COLOUR = "#1e88e5"


class DigitApp:
    """The drawing window's widgets and logic, inside `master` (a Tk root or Toplevel).

    Args:
        master: the Tk root (or a Toplevel) to fill.
        predict_fn: x (1, 1, 28, 28) float32 -> probabilities (10,); None when no model.
        message: shown instead of predictions when predict_fn is None.
        resolution: side of the internal Pillow image the strokes are mirrored into.
        brush: brush diameter in internal-image pixels (about an MNIST stroke once scaled).
        throttle_ms: the least time between two predictions while drawing.
        canvas_size: the canvas side, in screen pixels, when the window opens.
    """

    def __init__(
        self,
        master: tk.Misc,
        predict_fn: Callable[[numpy.ndarray], numpy.ndarray] | None,
        *,
        message: str | None = None,
        resolution: int = 280,
        brush: int = 22,
        throttle_ms: int = 60,
        canvas_size: int = 420,
    ) -> None:
        self.master = master
        self.predict_fn = predict_fn
        self.no_model_message = message or "No model loaded"
        self.resolution = resolution
        self.brush = brush
        self.throttle_ms = throttle_ms
        #: Strokes in internal-image coordinates: one list of (x, y) points per stroke.
        self.strokes: list[list[tuple[float, float]]] = []
        #: The drawing mirrored at a fixed resolution: black ink on white, mode "L".
        self.image = Image.new("L", (resolution, resolution), 255)
        self._draw = ImageDraw.Draw(self.image)
        self.scale = canvas_size / resolution  # screen pixels per internal pixel
        #: The last network input (1, 1, 28, 28), or None when the canvas is blank.
        self.network_input: numpy.ndarray | None = None
        #: The last probabilities shown (10,), or None.
        self.probabilities: numpy.ndarray | None = None
        self._pending: str | None = None  # id of the scheduled throttled prediction
        self._photos: list[ImageTk.PhotoImage] = []  # keep PhotoImages alive while shown
        self._reported: set[str] = set()  # failure messages whose traceback was printed
        self._build(canvas_size)
        self._bind_keys()
        self.show_blank()

    # --- layout ---------------------------------------------------------------------------

    def _build(self, canvas_size: int) -> None:
        """The board (the canvas) on the left, the panel on the right; see `_build_panel`."""
        master = self.master
        if isinstance(master, (tk.Tk, tk.Toplevel)):
            master.title(TITLE)
        master.columnconfigure(0, weight=1)
        master.rowconfigure(0, weight=1)

        # The board takes all the room the panel leaves; the canvas is the largest square in it.
        self.board = tk.Frame(master, bg="#cfd8dc", width=canvas_size + 24, height=canvas_size + 24)
        self.board.grid(row=0, column=0, sticky="nsew")
        self.canvas = tk.Canvas(
            self.board, bg="white", highlightthickness=0, borderwidth=0, cursor="crosshair"
        )
        self.canvas.place(
            relx=0.5, rely=0.5, anchor="center", width=canvas_size, height=canvas_size
        )
        self.board.bind("<Configure>", self._on_board_resize)
        self.canvas.bind("<Configure>", self._on_canvas_resize)
        self.canvas.bind("<ButtonPress-1>", self._on_press)
        self.canvas.bind("<B1-Motion>", self._on_motion)
        self.canvas.bind("<ButtonRelease-1>", self._on_release)

        self.panel = tk.Frame(master, bg=PANEL_BG, padx=12, pady=8)
        self.panel.grid(row=0, column=1, sticky="ns")
        self._build_panel(self.panel)

    def _build_panel(self, panel: tk.Frame) -> None:
        """Two columns, so that the panel is short enough for a laptop screen (about 450
        pixels on a 768-pixel screen):

            status line (the prediction or a message)
            top three           | Clear
            ten bars            | the network input (28 x 28, enlarged)
            the five preprocessing steps
        """
        self.status_var = tk.StringVar(panel)
        self.status_label = tk.Label(
            panel, textvariable=self.status_var, bg=PANEL_BG, wraplength=440, justify="left",
            font=("TkDefaultFont", 11, "bold"), anchor="w",
        )  # fmt: skip
        self.status_label.grid(row=0, column=0, columnspan=2, sticky="we")
        self.top3_var = tk.StringVar(panel)
        self.top3_label = tk.Label(
            panel, textvariable=self.top3_var, bg=PANEL_BG, justify="left", anchor="w",
            font=("TkFixedFont", 13), height=3,
        )  # fmt: skip
        self.top3_label.grid(row=1, column=0, sticky="we", pady=(4, 8))
        self.clear_button = tk.Button(panel, text="Clear  (Esc)", command=self.clear)
        self.clear_button.grid(row=1, column=1, sticky="new", padx=(12, 0), pady=(8, 0))

        self._build_bars(panel)
        self.bars.grid(row=2, column=0, sticky="nw")

        side = 28 * INPUT_SCALE
        seen = tk.Frame(panel, bg=PANEL_BG)
        seen.grid(row=2, column=1, sticky="nw", padx=(12, 0))
        tk.Label(seen, text="What the network sees\n(28 x 28):", bg=PANEL_BG, justify="left",
                 anchor="w").grid(row=0, column=0, sticky="we", pady=(0, 2))  # fmt: skip
        self.input_view = tk.Label(seen, bg="black", width=side, height=side, borderwidth=0)
        self.input_view.grid(row=1, column=0, sticky="w")

        steps = tk.Label(
            panel, text="Steps: ink, cropped, 20 px box, centred, smoothed", bg=PANEL_BG, anchor="w"
        )
        steps.grid(row=3, column=0, columnspan=2, sticky="we", pady=(10, 2))
        strip = tk.Frame(panel, bg=PANEL_BG)
        strip.grid(row=4, column=0, columnspan=2, sticky="w")
        self.step_views = []
        for column in range(5):
            view = tk.Label(strip, bg="black", width=STEP_SIZE, height=STEP_SIZE, borderwidth=0)
            view.grid(row=0, column=column, padx=(0, 4))
            self.step_views.append(view)

    def _build_bars(self, panel: tk.Frame) -> None:
        """A canvas of ten rows: the digit, a bar of length p * bar_length, p in percent."""
        self.bar_length = 200  # screen pixels of a bar at probability 1
        self.bars = tk.Canvas(
            panel, width=self.bar_length + 90, height=10 * BAR_ROW + 4, bg=PANEL_BG,
            highlightthickness=0,
        )  # fmt: skip
        self.bar_items: list[int] = []
        self.bar_labels: list[int] = []
        for digit in range(10):
            top = 2 + digit * BAR_ROW
            self.bars.create_text(12, top + BAR_ROW / 2, text=str(digit), font=("TkFixedFont", 12))
            self.bar_items.append(
                self.bars.create_rectangle(
                    26, top + 3, 26, top + BAR_ROW - 3, fill=BAR_COLOUR, width=0
                )
            )
            self.bar_labels.append(
                self.bars.create_text(
                    30 + self.bar_length,
                    top + BAR_ROW / 2,
                    anchor="w",
                    text="",
                    font=("TkFixedFont", 10),
                )
            )

    def _fit_min_size(self) -> None:
        """The window's minimum size: the whole panel, and room for a MIN_CANVAS canvas.

        Read from the widgets' requested sizes (fonts differ between systems), and again
        whenever a message may have changed the panel's height (a long one wraps).
        """
        master = self.master
        if not isinstance(master, (tk.Tk, tk.Toplevel)):
            return  # the window is someone else's to size
        master.update_idletasks()  # the requested sizes of what was just shown
        board = MIN_CANVAS + 24
        width = board + self.panel.winfo_reqwidth()
        height = max(board, self.panel.winfo_reqheight())
        if master.minsize() != (width, height):
            master.minsize(width, height)

    def _bind_keys(self) -> None:
        top = self.master.winfo_toplevel()
        for key in ("<Escape>", "<Delete>", "<BackSpace>", "<KeyPress-c>"):
            top.bind(key, lambda event: self.clear())

    # --- geometry -------------------------------------------------------------------------

    def _on_board_resize(self, event: tk.Event) -> None:
        """Keep the canvas the largest square that fits the board, with a small margin."""
        side = max(50, min(event.width, event.height) - 24)
        self.canvas.place_configure(width=side, height=side)

    def _on_canvas_resize(self, event: tk.Event) -> None:
        """A new canvas size: new scale, and every stroke redrawn in the same relative place."""
        self.scale = event.width / self.resolution
        self.canvas.delete("ink")
        for stroke in self.strokes:
            self._paint_canvas_dot(stroke[0])
            for start, end in zip(stroke, stroke[1:], strict=False):
                self._paint_canvas_segment(start, end)

    def to_image_coords(self, x: float, y: float) -> tuple[float, float]:
        """Canvas (screen) pixel -> internal image coordinates: divide by the scale."""
        return x / self.scale, y / self.scale

    # --- drawing --------------------------------------------------------------------------

    def _on_press(self, event: tk.Event) -> None:
        point = self.to_image_coords(event.x, event.y)
        self.strokes.append([point])
        self._paint_image_dot(point)
        self._paint_canvas_dot(point)
        self._schedule_prediction()

    def _on_motion(self, event: tk.Event) -> None:
        if not self.strokes:  # a drag that began outside the canvas
            self._on_press(event)
            return
        point = self.to_image_coords(event.x, event.y)
        stroke = self.strokes[-1]
        start = stroke[-1]
        stroke.append(point)
        self._paint_image_segment(start, point)
        self._paint_canvas_segment(start, point)
        self._schedule_prediction()

    def _on_release(self, event: tk.Event) -> None:
        self._cancel_pending()
        self.predict_now()

    def _paint_image_dot(self, point: tuple[float, float]) -> None:
        x, y, r = point[0], point[1], self.brush / 2
        self._draw.ellipse((x - r, y - r, x + r, y + r), fill=0)

    def _paint_image_segment(self, start, end) -> None:
        """A line of width `brush` with round ends (a disc at each end), like Tk's round caps."""
        self._draw.line((start, end), fill=0, width=self.brush)
        self._paint_image_dot(end)

    def _paint_canvas_dot(self, point: tuple[float, float]) -> None:
        x, y, r = point[0] * self.scale, point[1] * self.scale, self.brush * self.scale / 2
        self.canvas.create_oval(x - r, y - r, x + r, y + r, fill="black", width=0, tags="ink")

    def _paint_canvas_segment(self, start, end) -> None:
        s = self.scale
        self.canvas.create_line(
            start[0] * s, start[1] * s, end[0] * s, end[1] * s, fill="black",
            width=self.brush * s, capstyle="round", tags="ink",
        )  # fmt: skip

    def clear(self) -> None:
        """Forget every stroke: blank canvas, blank image, no prediction."""
        self._cancel_pending()
        self.strokes.clear()
        self.canvas.delete("ink")
        self._draw.rectangle((0, 0, self.resolution, self.resolution), fill=255)
        self.show_blank()

    # --- prediction -----------------------------------------------------------------------

    def _schedule_prediction(self) -> None:
        """Predict at most once per throttle_ms while drawing (the event loop stays free)."""
        if self._pending is None:
            self._pending = self.master.after(self.throttle_ms, self._run_pending)

    def _run_pending(self) -> None:
        self._pending = None
        self.predict_now()

    def _cancel_pending(self) -> None:
        if self._pending is not None:
            self.master.after_cancel(self._pending)
            self._pending = None

    def predict_now(self) -> None:
        """Preprocess the mirrored image, run the model, and show everything."""
        steps = preprocess.preprocess_steps(self.image)
        if steps.smoothed is None:
            self.show_blank()
            return
        x = steps.smoothed[None, None]  # (1, 1, 28, 28)
        self.network_input = x
        self._show_steps(steps)
        if self.predict_fn is None:
            self._show_message(self.no_model_message)
            return
        try:
            probabilities = numpy.asarray(self.predict_fn(x), dtype=numpy.float64).reshape(-1)
            if probabilities.shape != (10,):
                raise ValueError(f"the model gave {probabilities.size} outputs, expected 10")
        except Exception as error:  # a broken model must not take the window down
            self._report_failure(error)
            return
        self.show_probabilities(probabilities)

    def _report_failure(self, error: Exception) -> None:
        """Show a failed prediction in the window; its traceback goes to stderr only the
        first time that message comes, not on every stroke."""
        message = f"Prediction failed: {error}"
        if message not in self._reported:
            self._reported.add(message)
            traceback.print_exception(error, file=sys.stderr)
        self._show_message(message)

    # --- display --------------------------------------------------------------------------

    def show_probabilities(self, probabilities: numpy.ndarray) -> None:
        """probabilities (10,), one per digit: bars of length p * bar_length, the top three
        as text, the best in the status line."""
        self.probabilities = probabilities
        best = numpy.argsort(-probabilities, kind="stable")[:3]
        for digit, p in enumerate(probabilities):
            self._set_bar(digit, float(p), TOP_COLOUR if digit == best[0] else BAR_COLOUR)
        self.status_var.set(f"It looks like a {best[0]}")
        self.top3_var.set(
            "\n".join(
                f"{rank}. {d}  {100 * probabilities[d]:5.1f}%" for rank, d in enumerate(best, 1)
            )
        )

    def _set_bar(self, digit: int, p: float, colour: str) -> None:
        x0, y0, _, y1 = self.bars.coords(self.bar_items[digit])
        self.bars.coords(self.bar_items[digit], x0, y0, x0 + p * self.bar_length, y1)
        self.bars.itemconfigure(self.bar_items[digit], fill=colour)
        self.bars.itemconfigure(self.bar_labels[digit], text=f"{100 * p:5.1f}%")

    def _clear_bars(self) -> None:
        for digit in range(10):
            self._set_bar(digit, 0.0, BAR_COLOUR)
            self.bars.itemconfigure(self.bar_labels[digit], text="")

    def _show_message(self, text: str) -> None:
        self.probabilities = None
        self._clear_bars()
        self.status_var.set(text)
        self.top3_var.set("")
        self._fit_min_size()  # a long message wraps onto more lines

    def show_blank(self) -> None:
        """Nothing drawn: the blank message, empty bars, black network input."""
        self.network_input = None
        black = numpy.zeros((28, 28), numpy.float32)
        self._show_array(self.input_view, black, INPUT_SCALE, slot=0)
        for index, view in enumerate(self.step_views):
            self._show_array(view, black, 1, slot=1 + index, size=STEP_SIZE)
        # last: the images set the panel's size (an empty Label's width counts characters)
        message = BLANK_MESSAGE if self.predict_fn is not None else self.no_model_message
        self._show_message(message)

    def _show_steps(self, steps: preprocess.Steps) -> None:
        self._show_array(self.input_view, steps.smoothed, INPUT_SCALE, slot=0)
        shown = (steps.ink, steps.cropped, steps.scaled, steps.placed, steps.smoothed)
        for index, (view, array) in enumerate(zip(self.step_views, shown, strict=True)):
            self._show_array(view, array, 1, slot=1 + index, size=STEP_SIZE)

    def _show_array(self, view: tk.Label, array, scale: int, *, slot: int, size=None) -> None:
        """Show an [0, 1] array in a Label: enlarged by `scale`, or fitted into size x size."""
        image = preprocess.to_image(array, scale)
        if size is not None:
            fitted = Image.new("L", (size, size), 0)
            thumb = image.copy()
            thumb.thumbnail((size, size), Image.Resampling.BILINEAR)
            if max(thumb.size) < size // 2:  # small arrays (28 px) enlarged with crisp pixels
                factor = size // max(thumb.size)
                thumb = thumb.resize(
                    (thumb.width * factor, thumb.height * factor), Image.Resampling.NEAREST
                )
            fitted.paste(thumb, ((size - thumb.width) // 2, (size - thumb.height) // 2))
            image = fitted
        photo = ImageTk.PhotoImage(image, master=self.master)
        while len(self._photos) <= slot:
            self._photos.append(photo)
        self._photos[slot] = photo
        view.configure(image=photo, width=image.width, height=image.height)


def wake_for_signals(root: tk.Tk, interval_ms: int = SIGNAL_CHECK_MS) -> None:
    """Wake Tk's event loop every `interval_ms` so that Python's signal handlers run.

    `mainloop` runs Python's signal handlers (Ctrl+C's KeyboardInterrupt) only after Tk
    has handled an event, and an idle window gets none: SIGINT would wait for the next
    mouse move. A Tcl timer that only re-arms itself is such an event. It runs no Python
    code, so the KeyboardInterrupt leaves `mainloop` itself rather than a Tk callback
    (which would print it and carry on); it costs one Tcl timer per interval.
    """
    root.tk.eval(
        f"proc convnet_gui_wake {{}} {{ after {int(interval_ms)} convnet_gui_wake }}; "
        "convnet_gui_wake"
    )


def run(predict_fn=None, *, message: str | None = None) -> None:
    """Open the window and run the Tk event loop until it is closed (or Ctrl+C, which
    raises KeyboardInterrupt here)."""
    root = tk.Tk()
    DigitApp(root, predict_fn, message=message)
    wake_for_signals(root)
    root.mainloop()
