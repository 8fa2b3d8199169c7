"""Photos and scans of digits made into the classifier's 8x8 grey levels (factorize_app/tasks/digits/images.py)."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("sklearn", reason="the digits requirements are not installed")
np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

from factorize_app.tasks.digits import model  # noqa: E402 (needs scikit-learn)
from factorize_app.tasks.digits.images import ImageRefused, pixels_from_image  # noqa: E402
from tests.test_file_inputs import gif, png_claiming  # noqa: E402

# (pixel scale, white margin, format, light ink on dark paper, upscaling filter)
RENDERINGS = [
    (4, 8, "PNG", False, Image.Resampling.NEAREST),
    (12, 30, "JPEG", False, Image.Resampling.BILINEAR),
    (30, 50, "PNG", True, Image.Resampling.BICUBIC),
    (7, 3, "JPEG", True, Image.Resampling.NEAREST),
]


def rendered(pixels, scale: int, margin: int, fmt: str, light_ink: bool, resample) -> io.BytesIO:
    """A held-out 8x8 digit drawn as an image file of its own size, paper and format."""
    ink = np.asarray(pixels, dtype=float).reshape(8, 8) / 16
    digit = Image.fromarray(((1 - ink) * 255).astype(np.uint8), "L").resize((8 * scale, 8 * scale), resample)
    canvas = Image.new("L", (8 * scale + 2 * margin, 8 * scale + 3 * margin), 255)  # not square
    canvas.paste(digit, (margin, margin))
    if light_ink:
        canvas = Image.eval(canvas, lambda value: 255 - value)
    out = io.BytesIO()
    canvas.convert("RGB").save(out, fmt)
    out.seek(0)
    return out


@pytest.fixture(scope="module")
def classifier():
    return model.train()["classifier"]


@pytest.mark.parametrize("rendering", RENDERINGS, ids=lambda r: f"{r[2]}-x{r[0]}{'-light-ink' if r[3] else ''}")
def test_held_out_digits_drawn_as_images_are_recognised(classifier, rendering):
    _, test_x, _, test_y = model.held_out_split()
    features = np.array([pixels_from_image(rendered(image, *rendering)) for image in test_x])
    assert features.shape == (len(test_x), 64) and features.min() >= 0 and features.max() <= 16
    accuracy = (classifier.predict(features) == test_y).mean()
    assert accuracy >= 0.9, accuracy


def test_an_image_file_on_disk_reads_as_an_open_one(tmp_path):
    _, test_x, _, _ = model.held_out_split()
    path = tmp_path / "digit.png"
    path.write_bytes(rendered(test_x[0], *RENDERINGS[0]).getvalue())
    assert pixels_from_image(str(path)) == pixels_from_image(rendered(test_x[0], *RENDERINGS[0]))


def truncated_png() -> bytes:
    _, test_x, _, _ = model.held_out_split()
    data = rendered(test_x[0], *RENDERINGS[2]).getvalue()
    return data[: len(data) // 2]


def blank_png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (40, 40), 200).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"not an image at all", "not a readable image"),
        (b"", "not a readable image"),
        (gif(), "PNG or JPEG expected"),
        (png_claiming(100_000, 100_000), "too large: at most 25,000,000 pixels"),
        (png_claiming(6_000, 5_000), "too large: 6000x5000 pixels, at most 25,000,000"),
        (truncated_png(), "damaged"),
        (blank_png(), "blank"),
    ],
    ids=["text", "empty", "gif", "bomb-100000", "bomb-6000", "truncated", "blank"],
)
def test_what_is_not_a_digit_image_is_refused_with_its_reason(data, says):
    with pytest.raises(ImageRefused, match=says):
        pixels_from_image(io.BytesIO(data))
