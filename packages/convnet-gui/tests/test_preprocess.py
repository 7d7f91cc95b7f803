"""Preprocessing a drawing into an MNIST-like input: known results, properties, MNIST round trip."""

from __future__ import annotations

import io
import pathlib
import subprocess
import sys

import numpy
import pytest
from convnet_gui import preprocess as P
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw


def drawing(size, strokes, width, mode="L", ink=0, paper=255):
    """A canvas of `size` (w, h) with polyline `strokes` in a round brush of `width` px."""
    image = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(image)
    for points in strokes:
        draw.line(points, fill=ink, width=width, joint="curve")
        r = width / 2
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=ink)
    return image


def test_importing_preprocess_does_not_import_tkinter():
    code = (
        "import sys, convnet_gui, convnet_gui.preprocess\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tkinter', '_tkinter'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- each step on inputs with known answers -------------------------------------------------


def test_to_grayscale_inverted_maps_paper_to_0_and_ink_to_1():
    image = Image.new("RGB", (4, 3), (255, 255, 255))
    image.putpixel((1, 2), (0, 0, 0))
    image.putpixel((3, 0), (255, 0, 0))  # pure red: L = 0.299 * 255 -> round(76.245) = 76
    ink = P.to_grayscale_inverted(image)
    assert ink.shape == (3, 4) and ink.dtype == numpy.float32
    assert ink[2, 1] == 1.0
    assert ink[0, 3] == pytest.approx(1 - 76 / 255)
    assert ink.sum() == pytest.approx(1 + 1 - 76 / 255)


def test_transparent_pixels_count_as_paper():
    image = Image.new("RGBA", (5, 5), (0, 0, 0, 0))  # transparent black
    image.putpixel((2, 2), (0, 0, 0, 255))
    ink = P.to_grayscale_inverted(image)
    expected = numpy.zeros((5, 5), numpy.float32)
    expected[2, 2] = 1.0
    numpy.testing.assert_array_equal(ink, expected)


def sixteen_bit(array: numpy.ndarray, mode: str) -> Image.Image:
    """A uint16 (H, W) array as a Pillow image of a 16-bit grey `mode`."""
    if mode == "I;16B":
        return Image.frombytes(mode, array.shape[::-1], array.astype(">u2").tobytes())
    return Image.fromarray(array).convert(mode) if mode != "I;16" else Image.fromarray(array)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16_bit_grey_is_scaled_by_its_range(mode):
    array = numpy.full((3, 4), 65535, numpy.uint16)
    array[1, 2] = 8000
    array[2, 0] = 0
    image = sixteen_bit(array, mode)
    assert image.mode == mode
    ink = P.to_grayscale_inverted(image)
    expected = numpy.zeros((3, 4), numpy.float32)
    expected[1, 2] = 1 - 8000 / 65535
    expected[2, 0] = 1.0
    numpy.testing.assert_allclose(ink, expected, rtol=1e-6, atol=1e-7)


def test_a_16_bit_drawing_gives_the_same_input_as_its_8_bit_copy():
    array = numpy.full((280, 280), 65535, numpy.uint16)
    array[100:180, 130:150] = 8000  # a "1", grey 8000 / 65535 = 0.12 (31 in 8 bits)
    x16 = P.to_mnist(Image.fromarray(array))
    x8 = P.to_mnist(Image.fromarray(numpy.round(array / 257).astype(numpy.uint8)))
    assert x16 is not None and x16.shape == (1, 1, 28, 28)
    numpy.testing.assert_allclose(x16, x8, atol=1e-5)


def test_float_images_and_out_of_range_i_images_are_refused():
    with pytest.raises(ValueError) as error:
        P.to_grayscale_inverted(Image.new("F", (4, 4), 0.5))
    assert str(error.value) == (
        'to_grayscale_inverted: a floating-point (mode "F") image has no stated range; '
        'convert it to 8-bit grey first, e.g. Image.fromarray((255 * a).astype("uint8")) '
        "for values a in [0, 1]"
    )
    image = Image.fromarray(numpy.array([[0, 70000]], numpy.int32))
    assert image.mode == "I"
    with pytest.raises(ValueError) as error:
        P.to_grayscale_inverted(image)
    assert str(error.value) == (
        'to_grayscale_inverted: a mode "I" image is read as 16-bit grey (0..65535), '
        "but it holds values from 0 to 70000"
    )


def test_paper_level_is_the_median_of_the_border_band():
    ink = numpy.full((100, 50), 0.2, numpy.float32)  # band: round(0.02 * 50) = 1 pixel
    ink[0, :20] = 1.0  # a stroke along part of the top edge: 20 of the 296 border pixels
    ink[40:60, 10:40] = 0.9  # the drawing itself, inside
    assert P.paper_level(ink) == pytest.approx(0.2)
    wide = numpy.zeros((300, 300), numpy.float32)  # band: round(0.02 * 300) = 6 pixels
    wide[5:-5, 5:-5] = 1.0
    assert P.paper_level(wide) == 0.0  # 5 of the band's 6 rows are paper
    assert P.paper_level(wide, border=0.1) == 1.0  # 25 of its 30 rows are ink
    with pytest.raises(ValueError, match=r"2-d \(H, W\).*\(1, 5, 5\)"):
        P.paper_level(numpy.zeros((1, 5, 5)))


def test_remove_paper_known_values():
    # Grey paper 0.2 becomes 0, black ink stays 1, ink 0.6 becomes (0.6 - 0.2) / 0.8 = 0.5.
    ink = numpy.full((10, 10), 0.2, numpy.float32)
    ink[4, 4], ink[5, 5], ink[6, 6] = 1.0, 0.6, 0.1
    expected = numpy.zeros((10, 10), numpy.float32)
    expected[4, 4], expected[5, 5] = 1.0, 0.5
    numpy.testing.assert_allclose(P.remove_paper(ink), expected, atol=1e-6)
    # Dark paper 0.9 and strokes lighter than it: flipped, the light strokes become ink.
    dark = 1.0 - ink + 0.1 * (ink == 0.2)  # paper 0.9, strokes 0.0, 0.4 and 0.9
    expected = numpy.zeros((10, 10), numpy.float32)
    expected[4, 4], expected[5, 5] = 1.0, (0.9 - 0.4) / 0.9
    numpy.testing.assert_allclose(P.remove_paper(dark), expected, atol=1e-6)
    # Dark grey paper 0.6 under black strokes: the strokes are darker, no flip.
    grey = numpy.full((10, 10), 0.6, numpy.float32)
    grey[4, 4] = 1.0
    assert P.remove_paper(grey)[4, 4] == pytest.approx(1.0) and P.remove_paper(grey).sum() == 1
    # All black, or all white: nothing is ink.
    assert P.remove_paper(numpy.ones((5, 5))).max() == 0.0
    assert P.remove_paper(numpy.zeros((5, 5))).max() == 0.0


def seven(paper, ink, mode="L", size=(280, 280)):
    """A "7" drawn with a 22-pixel brush in `ink` on `paper`, as in the app's 280x280 image."""
    w, h = size
    stroke = [(0.25 * w, 0.2 * h), (0.75 * w, 0.2 * h), (0.55 * w, 0.5 * h), (0.4 * w, 0.85 * h)]
    return drawing(size, [stroke], 22, mode=mode, ink=ink, paper=paper)


@pytest.mark.parametrize(
    ("paper", "ink"),
    [(200, 0), (120, 0), (0, 255), (40, 200)],
    ids=["grey-paper", "dark-grey-paper", "white-on-black", "light-on-dark"],
)
def test_paper_shade_and_polarity_do_not_change_the_input(paper, ink):
    reference = P.to_mnist(seven(255, 0))
    x = P.to_mnist(seven(paper, ink))
    numpy.testing.assert_allclose(x, reference, atol=1e-5)
    steps = P.preprocess_steps(seven(paper, ink))
    assert steps.box == P.preprocess_steps(seven(255, 0)).box  # the box is the 7, not the page


def test_a_bright_speck_on_dark_grey_paper_does_not_flip_the_drawing():
    # black strokes (0.4 darker than the paper) and a white 3x3 speck (0.6 lighter): the
    # speck is under MIN_INK_FRACTION of the image, so it cannot decide the polarity
    image = seven(102, 0)
    image.paste(255, (10, 260, 13, 263))
    numpy.testing.assert_allclose(P.to_mnist(image), P.to_mnist(seven(255, 0)), atol=1e-5)


def test_a_seven_on_grey_paper_reads_as_a_confident_seven():
    from convnet_gui.predictor import load_predictor

    predict = load_predictor(pathlib.Path(__file__).parent / "data" / "reference_mnist.h5")
    for paper, ink in ((255, 0), (200, 0), (0, 255)):
        probabilities = predict(P.to_mnist(seven(paper, ink)))
        assert probabilities.argmax() == 7 and probabilities[7] > 0.95, (paper, probabilities)


def test_bounding_box_and_crop():
    ink = numpy.zeros((10, 12), numpy.float32)
    ink[2, 3] = 0.5
    ink[6, 9] = 1.0
    ink[8, 1] = 0.05  # fainter than the threshold: ignored
    box = P.bounding_box(ink)
    assert box == (2, 3, 7, 10)
    assert P.crop_to_content(ink, box).shape == (5, 7)
    assert P.bounding_box(numpy.zeros((4, 4))) is None
    with pytest.raises(ValueError, match=r"2-d \(H, W\).*\(2, 4, 4\)"):
        P.bounding_box(numpy.zeros((2, 4, 4)))


def test_scale_to_box_keeps_aspect_and_values():
    scaled = P.scale_to_box(numpy.ones((100, 50), numpy.float32), 20)
    assert scaled.shape == (20, 10)
    numpy.testing.assert_allclose(scaled, 1.0, atol=1e-6)
    assert P.scale_to_box(numpy.ones((3, 300), numpy.float32)).shape == (1, 20)  # never 0 wide
    assert P.scale_to_box(numpy.ones((5, 4), numpy.float32)).shape == (20, 16)  # enlarges too


def test_center_of_mass_known_values():
    image = numpy.zeros((5, 6))
    image[1, 1] = 1.0
    image[3, 4] = 3.0
    assert P.center_of_mass(image) == pytest.approx((2.5, 3.25))
    with pytest.raises(ValueError, match="no ink"):
        P.center_of_mass(numpy.zeros((3, 3)))


def test_place_by_center_of_mass_puts_a_dot_at_14_14():
    frame = P.place_by_center_of_mass(numpy.ones((1, 1), numpy.float32))
    assert frame.shape == (28, 28)
    assert numpy.argwhere(frame).tolist() == [[14, 14]]
    # A lopsided digit is clamped inside the frame rather than cut.
    digit = numpy.zeros((20, 20), numpy.float32)
    digit[:, -1] = 1.0
    frame = P.place_by_center_of_mass(digit)
    assert frame.sum() == digit.sum()
    assert numpy.array_equal(frame[4:24, 0:20], digit)  # moved left only to the edge
    # ink along any edge: the shift stops where the digit meets the frame's edge
    for ink_row, top in ((0, 8), (-1, 0)):
        digit = numpy.zeros((20, 20), numpy.float32)
        digit[ink_row, :] = 1.0
        frame = P.place_by_center_of_mass(digit)
        assert numpy.array_equal(frame[top : top + 20, 4:24], digit), ink_row
        frame = P.place_by_center_of_mass(digit.T.copy())
        assert numpy.array_equal(frame[4:24, top : top + 20], digit.T), ink_row
    with pytest.raises(ValueError, match=r"\(29, 3\) digit does not fit a \(28, 28\)"):
        P.place_by_center_of_mass(numpy.ones((29, 3), numpy.float32))


def test_smooth_a_dot_gives_the_normalised_gaussian():
    frame = numpy.zeros((9, 9), numpy.float32)
    frame[4, 4] = 0.7
    sigma = 0.5
    blurred = P.smooth(frame, sigma)
    k = numpy.arange(-4, 5)
    g = numpy.exp(-(k**2) / (2 * sigma**2)) * (numpy.abs(k) <= 1)  # radius ceil(2 sigma) = 1
    expected = numpy.outer(g, g) / g.max() ** 2
    numpy.testing.assert_allclose(blurred, expected, rtol=1e-6, atol=1e-7)
    assert P.smooth(numpy.zeros((3, 3), numpy.float32)).max() == 0.0


def test_to_image_round_trip_and_enlarges():
    array = numpy.linspace(0, 1, 12, dtype=numpy.float32).reshape(3, 4)
    image = P.to_image(array[None, None], scale=5)
    assert image.size == (20, 15) and image.mode == "L"
    numpy.testing.assert_array_equal(
        numpy.asarray(image)[::5, ::5], numpy.round(array * 255).astype(numpy.uint8)
    )


# --- properties on synthetic drawings ---------------------------------------------------------


def test_blank_drawings_give_none():
    assert P.to_mnist(Image.new("L", (280, 280), 255)) is None
    assert P.to_mnist(Image.new("RGBA", (50, 80), (0, 0, 0, 0))) is None
    assert P.to_mnist(Image.new("RGB", (10, 10), (240, 240, 240))) is None  # faint grey paper
    assert P.preprocess_steps(Image.new("L", (9, 9), 255)).box is None
    assert P.to_mnist(Image.new("L", (280, 280), 0)) is None  # an all-black canvas
    assert P.to_mnist(Image.new("RGB", (60, 40), (120, 130, 140))) is None  # plain grey


def test_is_too_small_known_values():
    ink = numpy.zeros((200, 100), numpy.float32)  # limits: side 0.1 * 200 = 20, ink 20
    assert P.is_too_small(ink, (10, 10, 29, 29))  # longer side 19 < 20
    ink[10:30, 10:11] = 1.0  # a 20x1 tick: ink 20
    assert not P.is_too_small(ink, (10, 10, 30, 11))
    ink[10:30, 10:11] = 0.95  # ink 19 < 20
    assert P.is_too_small(ink, (10, 10, 30, 11))
    assert not P.is_too_small(ink, (10, 10, 30, 11), min_ink=0.0009)


def test_a_dot_or_specks_are_blank():
    dot = drawing((280, 280), [[(140, 140)]], 22)  # a click in the app: a 22-pixel dot
    assert P.to_mnist(dot) is None
    steps = P.preprocess_steps(dot)
    assert steps.box is None and steps.ink.max() == 1.0  # the ink is still there to show
    specks = Image.new("L", (280, 280), 255)
    for xy in ((20, 30), (250, 260), (40, 240)):  # far apart: their box is large
        specks.putpixel(xy, 0)
    assert P.to_mnist(specks) is None
    tick = drawing((280, 280), [[(140, 140), (140, 160)]], 22)  # 42 pixels tall: a digit
    assert P.to_mnist(tick) is not None


strokes_strategy = st.lists(
    st.lists(st.tuples(st.floats(0.05, 0.95), st.floats(0.05, 0.95)), min_size=1, max_size=5),
    min_size=1,
    max_size=3,
)


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(30, 700),
    height=st.integers(30, 700),
    strokes=strokes_strategy,
    brush=st.floats(0.02, 0.12),
)
def test_any_drawing_becomes_a_centred_20_pixel_digit(width, height, strokes, brush):
    """Longer side 20 px, aspect kept, centre of mass within a pixel of (14, 14), in [0, 1]."""
    points = [[(x * width, y * height) for x, y in stroke] for stroke in strokes]
    image = drawing((width, height), points, max(2, round(brush * min(width, height))))
    x = P.to_mnist(image)
    ink = P.remove_paper(P.to_grayscale_inverted(image))
    top, left, bottom, right = P.bounding_box(ink)
    if max(bottom - top, right - left) < 0.1 * max(width, height) or ink.sum() < 1e-3 * ink.size:
        assert x is None  # a dot or a speck, not a digit
        return
    assert x.shape == (1, 1, 28, 28) and x.dtype == numpy.float32
    assert x.min() >= 0.0 and x.max() == pytest.approx(1.0)
    steps = P.preprocess_steps(image)
    h, w = steps.cropped.shape
    assert max(steps.scaled.shape) == 20
    assert steps.scaled.shape == (
        max(1, round(h * 20 / max(h, w))),
        max(1, round(w * 20 / max(h, w))),
    )
    top, left, bottom, right = P.bounding_box(steps.placed, threshold=0.0)
    assert max(bottom - top, right - left) == 20
    # Centre of mass at (14, 14) within the rounding of a whole-pixel shift, unless the digit is
    # so lopsided that the shift was clamped to keep it inside the frame (it then touches the
    # edge opposite the side its centre of mass fell short of: it could move no further).
    row, col = P.center_of_mass(steps.placed)
    assert abs(row - 14) <= 0.5 + 1e-4 or (bottom == 28 if row < 14 else top == 0), (
        row,
        top,
        bottom,
    )
    assert abs(col - 14) <= 0.5 + 1e-4 or (right == 28 if col < 14 else left == 0), (
        col,
        left,
        right,
    )
    # The blur is symmetric: it moves the centre of mass only by what spills over the edge.
    assert numpy.allclose(P.center_of_mass(x[0, 0]), (row, col), atol=0.7)


def test_position_and_size_on_the_canvas_do_not_matter():
    """The same digit drawn at another place, or twice as large, gives (nearly) the same input."""
    stroke = [(30, 20), (70, 20), (40, 90), (60, 60)]
    base = P.to_mnist(drawing((120, 120), [stroke], 8))
    moved = P.to_mnist(drawing((300, 200), [[(x + 150, y + 70) for x, y in stroke]], 8))
    numpy.testing.assert_array_equal(base, moved)
    doubled = P.to_mnist(drawing((500, 400), [[(2 * x, 2 * y) for x, y in stroke]], 16))
    assert numpy.abs(doubled - base).mean() < 0.03


def test_colour_and_transparency_give_the_same_input_as_grey():
    stroke = [(20, 30), (60, 80), (90, 20)]
    grey = P.to_mnist(drawing((120, 110), [stroke], 10))
    rgb = P.to_mnist(drawing((120, 110), [stroke], 10, mode="RGB", ink=(0, 0, 0), paper="white"))
    rgba = P.to_mnist(
        drawing((120, 110), [stroke], 10, mode="RGBA", ink=(0, 0, 0, 255), paper=(0, 0, 0, 0))
    )
    numpy.testing.assert_array_equal(grey, rgb)
    numpy.testing.assert_array_equal(grey, rgba)


# --- MNIST digits drawn large, dark on light, and read back -----------------------------------


def test_mnist_digits_come_back_close_to_the_originals(mnist_round_trip):
    originals, back, _ = mnist_round_trip
    correlation = numpy.array(
        [numpy.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(originals, back, strict=True)]
    )
    error = numpy.abs(originals - back).mean(axis=(1, 2))
    assert numpy.median(correlation) > 0.92, numpy.median(correlation)
    assert numpy.quantile(correlation, 0.05) > 0.8, numpy.quantile(correlation, 0.05)
    assert numpy.median(error) < 0.06, numpy.median(error)
    # The centre of mass comes back where MNIST put it (within rounding of a whole-pixel shift).
    shift = numpy.array(
        [
            numpy.subtract(P.center_of_mass(a), P.center_of_mass(b))
            for a, b in zip(originals, back, strict=True)
        ]
    )
    assert numpy.abs(shift).max() < 1.2, numpy.abs(shift).max()


def test_exif_orientation_is_applied_before_reading():
    # A "7" stored sideways (rotated 90 degrees counter-clockwise) in a JPEG whose EXIF
    # Orientation 6 tells viewers to turn it 90 degrees clockwise, as phone cameras save.
    upright = seven(255, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    upright.rotate(90, expand=True).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    photo = Image.open(io.BytesIO(buffer.getvalue()))
    ink = P.to_grayscale_inverted(photo)
    numpy.testing.assert_allclose(ink, P.to_grayscale_inverted(upright), atol=0.1)
    box = P.preprocess_steps(photo).box
    assert box == pytest.approx(P.preprocess_steps(upright).box, abs=1)
    assert photo.getexif()[0x0112] == 6  # the caller's image is left as it was


def test_empty_images_are_blank():
    for size in ((0, 0), (0, 5), (5, 0)):
        image = Image.new("L", size, 255)
        assert P.to_mnist(image) is None, size
        steps = P.preprocess_steps(image)
        assert steps.box is None and steps.ink.shape == (size[1], size[0])
    assert P.remove_paper(numpy.zeros((0, 0), numpy.float32)).shape == (0, 0)


def ramp(shape: tuple[int, int], direction: tuple[float, float]) -> numpy.ndarray:
    """(H, W) from 0 to 1 along `direction` (dx, dy): a lamp to one side of the page."""
    rows, cols = numpy.indices(shape, dtype=numpy.float64)
    along = direction[0] * cols + direction[1] * rows
    return (along - along.min()) / (along.max() - along.min())


def shaded(image: Image.Image, direction, levels: float) -> Image.Image:
    """`image` ("L") less a ramp from 0 to `levels` grey levels along `direction`."""
    grey = numpy.asarray(image, dtype=numpy.float64)  # (H, W)
    darker = grey - levels * ramp(grey.shape, direction)
    return Image.fromarray(numpy.clip(darker, 0, 255).round().astype(numpy.uint8))


def lit(image: Image.Image, direction, loss: float) -> Image.Image:
    """`image` ("L") under light that falls off along `direction`, losing the fraction
    `loss` at the far side: every pixel times 1 - loss * ramp, as a lamp lights paper."""
    grey = numpy.asarray(image, dtype=numpy.float64)  # (H, W)
    darker = grey * (1 - loss * ramp(grey.shape, direction))
    return Image.fromarray(darker.round().astype(numpy.uint8))


def test_paper_surface_recovers_a_tilted_page_under_strokes_that_touch_the_edges():
    rows, cols = numpy.indices((120, 200), dtype=numpy.float32)
    paper = 0.1 + 0.002 * cols + 0.001 * rows  # 0.1 at the top left, 0.62 at the bottom right
    ink = paper.copy()
    ink[40:80, 50:60] = 1.0  # a stroke inside
    ink[0:30, 100:104] = 1.0  # a stroke that runs into the top edge
    ink[115:120, 0:40] = 0.9  # and one along the bottom edge
    numpy.testing.assert_allclose(P.paper_surface(ink), paper, atol=1e-5)
    uniform = numpy.full((50, 50), 0.3, numpy.float32)
    uniform[0, :10] = 1.0
    numpy.testing.assert_allclose(P.paper_surface(uniform), numpy.full((50, 50), 0.3), atol=1e-7)
    assert P.paper_surface(numpy.zeros((1, 7), numpy.float32)).shape == (1, 7)
    with pytest.raises(ValueError, match=r"paper_surface expects a 2-d \(H, W\).*\(1, 5, 5\)"):
        P.paper_surface(numpy.zeros((1, 5, 5)))


ONE = [[(130, 40), (130, 240)]]  # a "1" drawn with a 20-pixel brush in a 280x280 image
ONE_BOX = (30, 120, 251, 141)
DIRECTIONS = {"left-right": (1, 0), "right-left": (-1, 0), "top-bottom": (0, 1),
              "bottom-top": (0, -1), "diagonal": (1, 1), "anti-diagonal": (-1, 1)}  # fmt: skip


@pytest.fixture(scope="module")
def reference_predict():
    from convnet_gui.predictor import load_predictor

    return load_predictor(pathlib.Path(__file__).parent / "data" / "reference_mnist.h5")


@pytest.mark.parametrize("direction", list(DIRECTIONS.values()), ids=list(DIRECTIONS))
@pytest.mark.parametrize(("paper", "ink"), [(200, 50), (60, 230)], ids=["dark-ink", "chalk"])
def test_a_lighting_gradient_is_paper_not_ink(direction, paper, ink, reference_predict):
    # 40 grey levels less from one side to the other: 16% of the range
    steps = P.preprocess_steps(
        shaded(drawing((280, 280), ONE, 20, ink=ink, paper=paper), direction, 40)
    )
    assert steps.box == ONE_BOX
    outside = steps.ink.copy()
    outside[ONE_BOX[0] : ONE_BOX[2], ONE_BOX[1] : ONE_BOX[3]] = 0
    assert outside.max() < 0.01  # the page outside the stroke is paper (8-bit rounding)
    assert steps.ink[40:240, 128:132].min() > 0.6  # and the stroke is ink all along
    probabilities = reference_predict(steps.smoothed[None, None])
    assert probabilities.argmax() == 1 and probabilities[1] > 0.95, probabilities


@pytest.mark.parametrize("direction", list(DIRECTIONS.values()), ids=list(DIRECTIONS))
def test_light_falling_off_across_the_page_is_undone(direction):
    # ink' = (ink - p) / (1 - p) with the local paper p: a stroke in the shade reads as dark
    # as in the light, as if the page were evenly lit (to within 8-bit rounding)
    even = drawing((280, 280), ONE, 20, ink=50, paper=200)
    numpy.testing.assert_allclose(
        P.preprocess_steps(lit(even, direction, 0.2)).ink, P.preprocess_steps(even).ink, atol=0.01
    )


def test_a_seven_lit_from_one_side_reads_as_a_confident_seven(reference_predict):
    for direction in DIRECTIONS.values():
        probabilities = reference_predict(P.to_mnist(shaded(seven(200, 50), direction, 60)))
        assert probabilities.argmax() == 7 and probabilities[7] > 0.95, (direction, probabilities)
