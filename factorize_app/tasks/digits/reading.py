"""Reading an image of a digit with Pillow alone: what the web server checks at submit (a file the
model could not read is refused then, naming the field), and where the model's conversion starts.

Only the image's header is read before its size is checked, so a decompression bomb is refused
before it is decoded; a JPEG is decoded at a reduced scale.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

FORMATS = ("PNG", "JPEG")
MAX_PIXELS = 25_000_000  # 5000x5000: far beyond a photo of one digit, a bounded decode
WORKING_SIDE = 512  # larger images are shrunk first: 8x8 values need no more detail
BLANK = 0.1  # an image whose ink differs from its paper by less than this (of 255) shows nothing


class ImageRefused(ValueError):
    """The image cannot be read as a digit; the message says why, for the client."""


def greyscale(source: str | Path | BinaryIO) -> Image.Image:
    """The image in grey levels, at most WORKING_SIDE on a side; ImageRefused if it cannot be one."""
    try:
        image = Image.open(source)
    except Image.DecompressionBombError:  # Pillow's own, far larger bound
        raise ImageRefused(f"too large: at most {MAX_PIXELS:,} pixels") from None
    except OSError as error:
        raise ImageRefused(f"not a readable image: {error}") from None
    with image:
        if image.format not in FORMATS:
            raise ImageRefused(f"a {image.format or 'unknown'} image: PNG or JPEG expected")
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageRefused(f"too large: {width}x{height} pixels, at most {MAX_PIXELS:,}")
        image.draft("L", (WORKING_SIDE, WORKING_SIDE))  # JPEG: decoded at a reduced scale
        try:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                paper = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(paper, image.convert("RGBA"))
            grey = image.convert("L")
        except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data
            raise ImageRefused(f"the image data is damaged: {error}") from None
    grey.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)
    return grey


def paper_shade(grey: Image.Image) -> float:
    """The paper's grey level: the median of the image's border (so light ink on a dark board works too)."""
    width, height = grey.size
    edges = [(0, 0, width, 1), (0, height - 1, width, height), (0, 0, 1, height), (width - 1, 0, width, height)]
    return float(statistics.median(value for box in edges for value in grey.crop(box).tobytes()))


def refuse_blank(grey: Image.Image, paper: float) -> None:
    """ImageRefused when no ink stands out from the paper."""
    darkest, lightest = grey.getextrema()
    ink = paper - darkest if paper >= 128 else lightest - paper
    if ink < BLANK * 255:
        raise ImageRefused("the image is blank: no ink stands out from the paper")


def check_digit_image(source: str | Path | BinaryIO) -> None:
    """At submit: ImageRefused (a ValueError) when the model could not read this image as a digit."""
    grey = greyscale(source)
    refuse_blank(grey, paper_shade(grey))
