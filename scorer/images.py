"""Turn remote-sensing image files into 8-bit RGB PIL images — one function for training and inference.

Remote-sensing users bring more than 8-bit RGB: single-band SAR, 16-bit and float GeoTIFFs,
RGBA, palette images, scenes of tens of thousands of pixels a side, and chips of a few pixels.
:func:`load_image` accepts all of them and returns what the Qwen2.5-VL processor expects.

Stretch rule for 16-bit and float data: per band, values are clipped to the 2nd–98th
percentile of the finite pixels and mapped linearly to 0–255 (NaN/inf become 0). This is the
usual "2 % linear stretch" of GIS viewers, so a SAR or 16-bit optical scene looks as it would
in QGIS. 8-bit data is never stretched.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Qwen2.5-VL works on 28-pixel units (patch 14 × merge 2): a smaller side cannot make one token.
MIN_SIDE = 28
STRETCH_PERCENTILES = (2.0, 98.0)
# Whole-scene GeoTIFFs are big; refuse only absurd sizes, and say so, instead of PIL's bomb error.
MAX_DECODE_PIXELS = 1_000_000_000
# PIL's own decompression-bomb check (~179 M pixels) would refuse ordinary whole scenes; it has no
# per-call setting, so it is raised once here and load_image applies MAX_DECODE_PIXELS itself.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_DECODE_PIXELS)
_TIFF_SUFFIXES = {".tif", ".tiff"}


class ImageLoadError(ValueError):
    """An image file is missing, unreadable or of a layout we cannot turn into RGB.

    ``path`` is the file, so a caller can name the record that points at it.
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)


def stretch_to_uint8(band: np.ndarray, percentiles: tuple[float, float] = STRETCH_PERCENTILES) -> np.ndarray:
    """Linear percentile stretch of one band (any dtype) to uint8; constant bands become 0."""
    data = band.astype(np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(band.shape, dtype=np.uint8)
    low, high = np.percentile(data[finite], percentiles)
    if high <= low:
        return np.zeros(band.shape, dtype=np.uint8)
    scaled = (np.where(finite, data, low) - low) / (high - low)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def array_to_rgb(array: np.ndarray) -> Image.Image:
    """An (H, W) or (H, W, C) array of any dtype → RGB image (bands 1–3 used; 1 band → gray)."""
    if array.ndim == 3 and array.shape[0] <= 4 < array.shape[-1]:
        array = np.moveaxis(array, 0, -1)  # planar (C, H, W) TIFFs
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"expected a 2-D or 3-D pixel array, got shape {array.shape}")
    bands = array.shape[-1]
    if bands == 2:  # e.g. dual-pol SAR (VV, VH): show VV as gray
        array = array[:, :, :1]
    elif bands >= 4:  # RGBA or multispectral: keep the first three bands
        array = array[:, :, :3]
    if array.dtype == np.uint8:
        out = array
    else:
        out = np.stack([stretch_to_uint8(array[:, :, i]) for i in range(array.shape[-1])], axis=-1)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(out), mode="RGB")


def _open_tiff(path: Path) -> Image.Image:
    import tifffile  # 16-bit / float / multi-band GeoTIFFs that PIL cannot decode

    return array_to_rgb(tifffile.imread(path))


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "L"):
        return image.convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return array_to_rgb(np.asarray(image))
    if image.mode in ("RGBA", "LA", "P", "PA"):
        # Transparent areas (no-data in clipped scenes) become black, not undefined colours.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def fit_pixel_budget(image: Image.Image, min_pixels: int | None, max_pixels: int | None) -> Image.Image:
    """Downscale so width×height ≤ max_pixels; upscale so each side ≥ 28 px and area ≥ min_pixels."""
    width, height = image.size
    scale = 1.0
    if max_pixels and width * height > max_pixels:
        scale = (max_pixels / (width * height)) ** 0.5
    else:
        need = MIN_SIDE / min(width, height)
        if min_pixels and width * height < min_pixels:
            need = max(need, (min_pixels / (width * height)) ** 0.5)
        scale = max(scale, need)
    if scale == 1.0:
        return image
    size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def load_image(
    source: str | os.PathLike[str] | Image.Image,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Open ``source`` and return an 8-bit RGB image within the pixel budget.

    Raises :class:`ImageLoadError` naming the file when it is missing or cannot be decoded.
    """
    if isinstance(source, Image.Image):
        return fit_pixel_budget(_pil_to_rgb(source), min_pixels, max_pixels)
    path = Path(source)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}", path)
    try:
        with Image.open(path) as opened:
            if opened.size[0] * opened.size[1] > MAX_DECODE_PIXELS:
                raise ImageLoadError(f"image {path} has {opened.size[0]}×{opened.size[1]} pixels, more than "
                                     f"{MAX_DECODE_PIXELS:,}; tile the scene first", path)
            if max_pixels and path.suffix.lower() not in _TIFF_SUFFIXES:
                opened.draft("RGB", _draft_size(opened.size, max_pixels))  # JPEG: decode at lower res
            try:
                rgb = _pil_to_rgb(opened)
            except (OSError, ValueError):
                if path.suffix.lower() not in _TIFF_SUFFIXES:
                    raise
                rgb = _open_tiff(path)
    except UnidentifiedImageError:
        if path.suffix.lower() not in _TIFF_SUFFIXES:
            raise ImageLoadError(f"cannot read image {path}: not a recognised image format", path) from None
        rgb = _open_tiff_or_fail(path)
    except ImageLoadError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageLoadError(f"cannot read image {path}: {err}", path) from err
    return fit_pixel_budget(rgb, min_pixels, max_pixels)


def _open_tiff_or_fail(path: Path) -> Image.Image:
    try:
        return _open_tiff(path)
    except Exception as err:  # tifffile raises many types; all mean "this file is unreadable"
        raise ImageLoadError(f"cannot read image {path}: {err}", path) from err


def _draft_size(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, (max_pixels / (width * height)) ** 0.5)
    return max(1, int(width * scale)), max(1, int(height * scale))
