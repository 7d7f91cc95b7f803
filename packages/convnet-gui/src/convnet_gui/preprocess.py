"""Turn a drawing into what MNIST looks like, with Pillow and NumPy only (never tkinter).

MNIST digits were made this way (LeCun et al.): the digit is cut out of its scan, scaled so
that it fits a 20x20 box keeping its aspect, with anti-aliasing, and placed in a 28x28
frame so that its centre of mass sits at the frame centre. Strokes are white (1.0) on a
black (0.0) background. A digit drawn with a mouse looks nothing like that: dark ink on a
light canvas, of any size, anywhere in the canvas. `to_mnist` runs the same recipe on it,
one small step per function, so each step can be shown and explained:

    ink     = to_grayscale_inverted(image)   # (H, W) float32, dark 1.0, white 0.0
    ink     = remove_paper(ink)              # (H, W), paper 0.0 whatever its shade or lighting
    box     = bounding_box(ink)              # (top, left, bottom, right) or None
    blank   = box is None or is_too_small(ink, box)   # a dot or a speck is no digit
    digit   = crop_to_content(ink, box)      # (h, w), the ink and nothing else
    digit   = scale_to_box(digit, 20)        # longer side 20 px, aspect kept
    frame   = place_by_center_of_mass(digit, 28)   # (28, 28), centre of mass at the centre
    frame   = smooth(frame)                  # a light Gaussian blur, peak scaled back to 1
    x       = frame[None, None]              # (1, 1, 28, 28), the network input

`preprocess_steps(image)` returns every intermediate image, for display.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy
from PIL import Image, ImageOps

__all__ = [
    "DIGIT_BOX",
    "FRAME_SIZE",
    "INK_THRESHOLD",
    "MIN_DIGIT_FRACTION",
    "MIN_INK_FRACTION",
    "PAPER_BORDER",
    "PAPER_FIT_ROUNDS",
    "PAPER_TOLERANCE",
    "SIXTEEN_BIT_MODES",
    "SIXTEEN_BIT_WHITE",
    "Steps",
    "border_band",
    "bounding_box",
    "center_of_mass",
    "crop_to_content",
    "is_too_small",
    "place_by_center_of_mass",
    "paper_level",
    "paper_surface",
    "preprocess_steps",
    "remove_paper",
    "scale_to_box",
    "smooth",
    "to_grayscale_inverted",
    "to_image",
    "to_mnist",
]

#: Side of the MNIST frame, in pixels.
FRAME_SIZE = 28
#: Side of the box the digit is scaled into (its longer side), as in MNIST.
DIGIT_BOX = 20
#: A pixel holds ink when its inverted intensity is above this (anti-aliased edges are faint).
INK_THRESHOLD = 0.1
#: A drawing whose box's longer side is under this fraction of the image's longer side is
#: blank: a click leaves a dot of the brush's size (22 px in the app's 280 px image, 0.08).
MIN_DIGIT_FRACTION = 0.1
#: A drawing whose total ink (the sum of its ink values) is under this fraction of the
#: image's area is blank: a few specks of dust, however far apart.
MIN_INK_FRACTION = 0.001
#: The paper level is measured on a band this fraction of the shorter image side wide
#: (at least one pixel) along the four edges.
PAPER_BORDER = 0.02
#: How many times `paper_surface` drops the pixels far from its plane and refits it.
PAPER_FIT_ROUNDS = 3
#: Pixels within this of the paper plane always count as paper while fitting it: a
#: noiseless page has a spread of 0, and a ramp rounded to 8 bits is off by half a level.
PAPER_TOLERANCE = 2 / 255


#: Full scale of Pillow's integer grey modes beyond 8 bits: 16-bit PNG and TIFF files open
#: as "I;16" (or "I;16B", "I;16L", "I;16N") or, in older Pillow, as "I" holding 0..65535.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
SIXTEEN_BIT_WHITE = 65535


def to_grayscale_inverted(image: Image.Image) -> numpy.ndarray:
    """Grey levels of `image`, inverted so that ink is 1.0 and paper 0.0.

    ink = 1 - L / 255 with L the luminance (Pillow's "L" mode: 0.299 R + 0.587 G + 0.114 B).
    A 16-bit grey image (modes "I;16", "I;16B", "I;16L", "I;16N" and "I") is scaled by its
    range instead: ink = 1 - v / 65535; an "I" image with values outside 0..65535 is refused
    (ValueError), as is a floating-point "F" image, whose range no file states.
    Transparent pixels count as white paper. An EXIF Orientation tag (a photograph taken
    with the camera turned) is applied first, so the digit is read the way viewers show it.
    Returns float32 (H, W) in [0, 1].
    """
    image = ImageOps.exif_transpose(image)  # a copy, upright; `image` itself is unchanged
    if image.mode == "F":
        raise ValueError(
            'to_grayscale_inverted: a floating-point (mode "F") image has no stated range; '
            'convert it to 8-bit grey first, e.g. Image.fromarray((255 * a).astype("uint8")) '
            "for values a in [0, 1]"
        )
    if image.mode in SIXTEEN_BIT_MODES:
        grey = numpy.asarray(image, dtype=numpy.float64)  # (H, W)
        if grey.size and (grey.min() < 0 or grey.max() > SIXTEEN_BIT_WHITE):
            raise ValueError(
                f'to_grayscale_inverted: a mode "{image.mode}" image is read as 16-bit grey '
                f"(0..{SIXTEEN_BIT_WHITE}), but it holds values from {int(grey.min())} "
                f"to {int(grey.max())}"
            )
        return (1.0 - grey / SIXTEEN_BIT_WHITE).astype(numpy.float32)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    grey = numpy.asarray(image.convert("L"), dtype=numpy.float32)  # (H, W) in [0, 255]
    return 1.0 - grey / 255.0


def border_band(shape: tuple[int, int], border: float = PAPER_BORDER) -> numpy.ndarray:
    """The band along the four edges where the paper is measured: bool (H, W), True in it.

    The band is max(1, round(border * min(H, W))) pixels wide.
    """
    width = max(1, round(border * min(shape)))
    mask = numpy.zeros(shape, dtype=bool)
    mask[:width, :] = mask[-width:, :] = mask[:, :width] = mask[:, -width:] = True
    return mask


def paper_level(ink: numpy.ndarray, border: float = PAPER_BORDER) -> float:
    """The paper's shade in an (H, W) inverted image: the median of its border band.

    The band is max(1, round(border * min(H, W))) pixels wide along all four edges. A drawing
    seldom reaches the edges, so the median is the paper even where a stroke touches one.
    0.0 is white paper, 1.0 black. `paper_surface` also follows light that varies across
    the page.
    """
    if ink.ndim != 2:
        raise ValueError(f"paper_level expects a 2-d (H, W) image, got shape {ink.shape}")
    return float(numpy.median(ink[border_band(ink.shape, border)]))


def paper_surface(ink: numpy.ndarray, border: float = PAPER_BORDER) -> numpy.ndarray:
    """The paper's shade at every pixel of an (H, W) inverted image: a plane fitted to the
    border band, so that light falling off across the page (a lamp to one side) is paper.

    paper(y, x) = a * u + b * v + c, with u, v the column and row scaled to [-1, 1], fitted
    by least squares to the band's pixels (`border_band`) with the strokes left out: the
    fit starts flat at the band's median (`paper_level`), then PAPER_FIT_ROUNDS times drops
    the pixels further from the current plane than 3 robust standard deviations (1.4826 x
    the median absolute deviation, at least PAPER_TOLERANCE) and refits on the rest. A
    stroke that runs into an edge is far from the plane and left out, as long as strokes
    cover less of the band than paper does. A plane over a rectangle is extreme at its
    corners, which lie in the band, so the fitted shades stay within those measured.

    On uniform paper the plane is flat at the median. Shading that is not linear (the
    shadow of a hand, a fold, a vignette darker in every corner) is beyond a plane.
    Returns float32 (H, W), clipped to [0, 1].
    """
    if ink.ndim != 2:
        raise ValueError(f"paper_surface expects a 2-d (H, W) image, got shape {ink.shape}")
    height, width = ink.shape
    u = numpy.linspace(-1.0, 1.0, width) if width > 1 else numpy.zeros(1)  # (W,) per column
    v = numpy.linspace(-1.0, 1.0, height) if height > 1 else numpy.zeros(1)  # (H,) per row
    rows, cols = numpy.nonzero(border_band(ink.shape, border))  # (n,) each
    design = numpy.stack([u[cols], v[rows], numpy.ones(rows.size)], axis=1)  # (n, 3)
    values = ink[rows, cols].astype(numpy.float64)  # (n,)
    coefficients = numpy.array([0.0, 0.0, numpy.median(values)])  # (a, b, c): flat
    for _ in range(PAPER_FIT_ROUNDS):
        distance = numpy.abs(values - design @ coefficients)  # (n,)
        spread = 1.4826 * float(numpy.median(distance))
        paper = distance <= max(3 * spread, PAPER_TOLERANCE)
        coefficients = numpy.linalg.lstsq(design[paper], values[paper], rcond=None)[0]
    a, b, c = coefficients
    by_row = (b * v + c).astype(numpy.float32)[:, None]  # (H, 1)
    by_column = (a * u).astype(numpy.float32)[None, :]  # (1, W)
    surface = by_row + by_column  # (H, W) float32
    return numpy.clip(surface, 0.0, 1.0, out=surface)


def remove_paper(ink: numpy.ndarray, border: float = PAPER_BORDER) -> numpy.ndarray:
    """Make the paper 0.0 whatever its shade, so that only the strokes count as ink.

    With p = paper_surface(ink) (the paper's shade at each pixel: uniform, or lit more
    on one side than the other), the strokes are what departs furthest from the paper:
    darker (the 99.9th percentile of ink - p) or lighter (minus its 0.1th percentile).
    Percentiles rather than the extremes, so that a speck (fewer pixels than
    MIN_INK_FRACTION of the image, which would count as blank on its own) cannot decide
    the polarity. When lighter wins (light ink on dark paper,
    such as chalk on a board or MNIST's own white-on-black digits) the image is flipped first
    (ink -> 1 - ink, p -> 1 - p); a tie keeps dark ink. Then ink' = max(0, (ink - p) / (1 - p)),
    pixel by pixel: the paper becomes 0.0, a stroke as dark as black stays 1.0, and grey
    paper (a scan, a photograph) no longer passes the ink threshold. Dividing by the local
    1 - p (the light the paper reflects there) undoes light that falls off across the
    page: a dark stroke reads as dark in the shade as in the light (exactly so when the
    light is a factor on every pixel, as a lamp's is). Where the paper is black
    (p = 1) nothing is ink, so black paper with nothing lighter on it gives all zeros; an
    empty image (no pixels) gives an empty result, which `bounding_box` reads as blank.
    Returns float32 (H, W) in [0, 1].
    """
    ink = numpy.asarray(ink, dtype=numpy.float32)
    if ink.size == 0:  # an empty (0, W) or (H, 0) image: no paper, no ink, a blank drawing
        return ink.copy()
    paper = paper_surface(ink, border)  # (H, W)
    percent = 100 * MIN_INK_FRACTION
    low, high = numpy.percentile(ink - paper, [percent, 100 - percent])
    darker, lighter = float(high), -float(low)
    if lighter > darker:
        ink, paper = 1.0 - ink, 1.0 - paper
    reflected = 1.0 - paper  # (H, W): the light the paper sends back, 0 where it is black
    cleaned = numpy.divide(ink - paper, reflected, out=numpy.zeros_like(ink), where=reflected > 0)
    return numpy.clip(cleaned, 0.0, 1.0).astype(numpy.float32)


def bounding_box(ink: numpy.ndarray, threshold: float = INK_THRESHOLD) -> tuple | None:
    """The smallest box holding every pixel with ink > `threshold`, or None when none does.

    `ink` is (H, W). Returns (top, left, bottom, right) with bottom and right exclusive, so
    that `ink[top:bottom, left:right]` is the content.
    """
    if ink.ndim != 2:
        raise ValueError(f"bounding_box expects a 2-d (H, W) image, got shape {ink.shape}")
    rows = numpy.flatnonzero((ink > threshold).any(axis=1))
    if rows.size == 0:
        return None
    cols = numpy.flatnonzero((ink > threshold).any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def is_too_small(
    ink: numpy.ndarray,
    box: tuple,
    min_fraction: float = MIN_DIGIT_FRACTION,
    min_ink: float = MIN_INK_FRACTION,
) -> bool:
    """True when the ink in `box` is too little to be a digit: the drawing counts as blank.

    `ink` is (H, W), `box` = (top, left, bottom, right) from `bounding_box`. Too little means
    max(bottom - top, right - left) < min_fraction * max(H, W) (a dot, a tick: scaled to 20
    px it would become a confident blob), or ink.sum() < min_ink * H * W (specks).
    """
    top, left, bottom, right = box
    height, width = ink.shape
    if max(bottom - top, right - left) < min_fraction * max(height, width):
        return True
    return float(ink.sum()) < min_ink * height * width


def crop_to_content(ink: numpy.ndarray, box: tuple) -> numpy.ndarray:
    """`ink[top:bottom, left:right]` for box = (top, left, bottom, right): (h, w)."""
    top, left, bottom, right = box
    return ink[top:bottom, left:right]


def scale_to_box(digit: numpy.ndarray, size: int = DIGIT_BOX) -> numpy.ndarray:
    """Resize (h, w) so that its longer side is `size` pixels, keeping the aspect ratio.

    The shorter side becomes max(1, round(short * size / long)). Pillow's bilinear filter
    widens its support when it shrinks, so every source pixel contributes (anti-aliasing,
    like MNIST's own normalisation); the result stays in [0, 1]. Returns float32 (h', w').
    """
    height, width = digit.shape
    longer = max(height, width)
    new_height = max(1, round(height * size / longer))
    new_width = max(1, round(width * size / longer))
    image = Image.fromarray(numpy.ascontiguousarray(digit, dtype=numpy.float32), mode="F")
    scaled = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    return numpy.clip(numpy.asarray(scaled, dtype=numpy.float32), 0.0, 1.0)


def center_of_mass(image: numpy.ndarray) -> tuple[float, float]:
    """Intensity-weighted mean pixel position (row, col) of an (H, W) image.

    row = sum_ij i * I_ij / sum_ij I_ij, likewise col; pixel (i, j) has its centre at (i, j).
    Raises ValueError for an image with no intensity at all.
    """
    total = float(image.sum())
    if total <= 0.0:
        raise ValueError("center_of_mass: the image holds no ink")
    rows = numpy.arange(image.shape[0], dtype=numpy.float64)
    cols = numpy.arange(image.shape[1], dtype=numpy.float64)
    row = float((image.sum(axis=1) * rows).sum()) / total
    col = float((image.sum(axis=0) * cols).sum()) / total
    return row, col


def place_by_center_of_mass(digit: numpy.ndarray, size: int = FRAME_SIZE) -> numpy.ndarray:
    """Paste an (h, w) digit into a black (size, size) frame, centre of mass at the centre.

    As in MNIST, the centre of mass goes to pixel (size / 2, size / 2) = (14, 14) in pixel
    coordinates (MNIST's own digits have it within half a pixel of there): the digit is
    shifted by whole pixels (rounded), and the shift is clamped so that the digit stays
    wholly inside the frame (a lopsided digit is then slightly off-centre rather than cut).
    Returns float32 (size, size).
    """
    height, width = digit.shape
    if height > size or width > size:
        raise ValueError(
            f"place_by_center_of_mass: a ({height}, {width}) digit does not fit a "
            f"({size}, {size}) frame"
        )
    row, col = center_of_mass(digit)
    centre = size / 2
    top = min(max(round(centre - row), 0), size - height)
    left = min(max(round(centre - col), 0), size - width)
    frame = numpy.zeros((size, size), dtype=numpy.float32)
    frame[top : top + height, left : left + width] = digit
    return frame


def _gaussian_kernel(sigma: float) -> numpy.ndarray:
    """Normalised 1-d Gaussian weights exp(-k^2 / (2 sigma^2)), k in [-r, r], r = ceil(2 sigma)."""
    radius = max(1, int(numpy.ceil(2 * sigma)))
    offsets = numpy.arange(-radius, radius + 1, dtype=numpy.float64)
    weights = numpy.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def smooth(frame: numpy.ndarray, sigma: float = 0.5) -> numpy.ndarray:
    """A light Gaussian blur of an (H, W) image, then its peak scaled back to 1.

    A separable convolution with Gaussian weights of standard deviation `sigma` pixels
    (zeros outside the image) softens the hard edges a mouse brush leaves; MNIST strokes
    have soft edges too. Dividing by the maximum keeps the strokes as bright as MNIST's
    (whose strokes reach 255). An all-zero image stays zero. Returns float32 (H, W) in [0, 1].
    """
    if sigma <= 0:
        blurred = numpy.asarray(frame, dtype=numpy.float64)
    else:
        kernel = _gaussian_kernel(sigma)
        radius = kernel.size // 2
        padded = numpy.pad(numpy.asarray(frame, dtype=numpy.float64), radius)
        height, width = frame.shape
        # Separable: blur along rows, then along columns, as a short loop over offsets.
        rows = sum(w * padded[k : k + height, :] for k, w in enumerate(kernel))  # (H, W+2r)
        blurred = sum(w * rows[:, k : k + width] for k, w in enumerate(kernel))  # (H, W)
    peak = float(blurred.max())
    if peak > 0:
        blurred = blurred / peak
    return numpy.clip(blurred, 0.0, 1.0).astype(numpy.float32)


class Steps(NamedTuple):
    """Every intermediate image of `to_mnist`, for display; all float32, ink 1.0 on 0.0.

    ink (H, W) with the paper removed (`remove_paper`), box (top, left, bottom, right) or
    None, cropped (h, w), scaled (h', w') with longer side 20, placed (28, 28), smoothed
    (28, 28) = the network input. For a blank drawing (no ink, or too little: see
    `is_too_small`) everything after `ink` is None.
    """

    ink: numpy.ndarray
    box: tuple | None
    cropped: numpy.ndarray | None
    scaled: numpy.ndarray | None
    placed: numpy.ndarray | None
    smoothed: numpy.ndarray | None


def preprocess_steps(image: Image.Image, threshold: float = INK_THRESHOLD) -> Steps:
    """Run each step of `to_mnist` on a Pillow image and keep every intermediate result."""
    ink = remove_paper(to_grayscale_inverted(image))
    box = bounding_box(ink, threshold)
    if box is None or is_too_small(ink, box):
        return Steps(ink, None, None, None, None, None)
    cropped = crop_to_content(ink, box)
    scaled = scale_to_box(cropped, DIGIT_BOX)
    placed = place_by_center_of_mass(scaled, FRAME_SIZE)
    smoothed = smooth(placed)
    return Steps(ink, box, cropped, scaled, placed, smoothed)


def to_mnist(image: Image.Image, threshold: float = INK_THRESHOLD) -> numpy.ndarray | None:
    """A drawing (any size) as an MNIST network input, or None.

    Dark ink on paper of any shade is read as drawn; light ink on darker paper (see
    `remove_paper`) is read as its negative, so both give the same input.

    Returns float32 (1, 1, 28, 28) in [0, 1], white digit on black, longer side 20 px,
    centre of mass at the frame centre, lightly smoothed; None when no pixel holds ink (a
    blank canvas, an empty 0-pixel image) or too little to be a digit (a dot, a speck:
    `is_too_small`).
    """
    steps = preprocess_steps(image, threshold)
    if steps.smoothed is None:
        return None
    return steps.smoothed[None, None, :, :]  # (1, 1, 28, 28)


def to_image(array: numpy.ndarray, scale: int = 1) -> Image.Image:
    """A [0, 1] float (H, W) array (or (1, 1, H, W)) as an 8-bit "L" Pillow image.

    Pixel values are round(255 * a); `scale` > 1 enlarges it with nearest-neighbour so each
    pixel stays a visible square.
    """
    array = numpy.asarray(array)
    if array.ndim == 4:
        array = array[0, 0]
    if array.ndim != 2:
        raise ValueError(f"to_image expects (H, W) or (1, 1, H, W), got shape {array.shape}")
    pixels = numpy.round(numpy.clip(array, 0.0, 1.0) * 255.0).astype(numpy.uint8)
    image = Image.fromarray(pixels, mode="L")
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image
