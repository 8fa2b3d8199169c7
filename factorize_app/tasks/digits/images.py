"""A photo or scan of a handwritten digit made into the 64 grey levels the classifier was trained on.

scikit-learn's digits are 32x32 bitmaps of the digit's ink, scaled to fill the height (the width
keeps its proportion and is centred), counted in 4x4 blocks: 8x8 values from 0 (paper) to 16
(ink). An image of any reasonable size is made into the same: greyscale, the paper's shade taken
from the border (so light ink on a dark board works too), cropped to the ink, scaled and centred
the same way, averaged in blocks. Only the image's header is read before its size is checked, so
a decompression bomb is refused before it is decoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from factorize_app.tasks.digits.reading import MAX_PIXELS, ImageRefused, greyscale, paper_shade, refuse_blank

BITMAP, BLOCK, GREY_LEVELS = 32, 4, 16
INK_THRESHOLD = 0.15  # of the darkest ink: fainter is paper texture or JPEG noise, not the digit

__all__ = ["MAX_PIXELS", "ImageRefused", "pixels_from_image"]


def pixels_from_image(source: str | Path | BinaryIO) -> list[int]:
    """64 integers from 0 to 16, row by row, from a PNG or JPEG file (a path or an open file)."""
    ink = _ink(greyscale(source))
    return _blocks(_fitted(ink)).reshape(-1).tolist()


def _ink(grey: Image.Image) -> np.ndarray:
    """How much ink each pixel holds, 0 to 1, whichever of ink and paper is the darker."""
    paper = paper_shade(grey)
    refuse_blank(grey, paper)
    values = np.asarray(grey, dtype=np.float64)
    ink = np.clip(paper - values if paper >= 128 else values - paper, 0, None)
    return ink / ink.max()


def _fitted(ink: np.ndarray) -> np.ndarray:
    """The ink cropped, scaled to fill the bitmap's height (or its width, if wider), centred."""
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    columns = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    cropped = ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    height, width = cropped.shape
    scale = BITMAP / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    scaled = np.asarray(Image.fromarray(cropped.astype(np.float32), mode="F").resize(size, Image.Resampling.BOX))
    bitmap = np.zeros((BITMAP, BITMAP))
    top, left = (BITMAP - size[1]) // 2, (BITMAP - size[0]) // 2
    bitmap[top : top + size[1], left : left + size[0]] = scaled
    return bitmap


def _blocks(bitmap: np.ndarray) -> np.ndarray:
    """Each 4x4 block's mean ink on the 0-16 scale (the training data counted on-pixels)."""
    side = BITMAP // BLOCK
    means = bitmap.reshape(side, BLOCK, side, BLOCK).mean(axis=(1, 3))
    return np.clip(np.rint(means * GREY_LEVELS), 0, GREY_LEVELS).astype(int)
