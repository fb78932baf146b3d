"""Turn remote-sensing image files into 8-bit RGB PIL images — one function for training and inference.

Remote-sensing users bring more than 8-bit RGB: single-band SAR, 16-bit and float GeoTIFFs,
RGBA, palette images, scenes of tens of thousands of pixels a side, and chips of a few pixels.
:func:`load_image` accepts all of them and returns what the Qwen2.5-VL processor expects.

Stretch rule for 16-bit and float data: per band, values are clipped to the 2nd–98th
percentile of the finite pixels and mapped linearly to 0–255 (NaN/inf become 0). This is the
usual "2 % linear stretch" of GIS viewers, so a SAR or 16-bit optical scene looks as it would
in QGIS. 8-bit data is never stretched. Data with nothing to stretch (every band all NaN/inf or
constant) is an error naming the file, not a black image.

Pixel limit (decompression bombs): the width × height in the file's header is checked before any
pixel is decoded; above ``max_image_pixels`` (default :data:`DEFAULT_MAX_IMAGE_PIXELS`, 150 MP,
or ``$REMOTE_SCORER_MAX_IMAGE_PIXELS``) the file is refused with :class:`ImageLoadError`. A
Sentinel-2 10 m tile (10,980² = 121 MP) still loads; a 1-bit PNG of 20,000² (48 KB on disk, 400 MP)
does not. JPEGs larger than the pixel budget are decoded reduced (``Image.draft``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Qwen2.5-VL works on 28-pixel units (patch 14 × merge 2): a smaller side cannot make one token.
MIN_SIDE = 28
STRETCH_PERCENTILES = (2.0, 98.0)
DEFAULT_MAX_IMAGE_PIXELS = 150_000_000
MAX_IMAGE_PIXELS_ENV = "REMOTE_SCORER_MAX_IMAGE_PIXELS"
# PIL's own decompression-bomb check (error above 2 × ~89 M pixels) has no per-call setting; it is
# raised once here to a hard ceiling so that load_image's own, configurable limit decides.
PIL_CEILING_PIXELS = 1_000_000_000
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, PIL_CEILING_PIXELS)
RESAMPLING = {name.lower(): member for name, member in Image.Resampling.__members__.items()}
_TIFF_SUFFIXES = {".tif", ".tiff"}
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # more than 8 bits per sample: stretched


def pixel_limit(limit: int | None = None) -> int:
    """``limit``, else ``$REMOTE_SCORER_MAX_IMAGE_PIXELS``, else :data:`DEFAULT_MAX_IMAGE_PIXELS`."""
    if limit is not None:
        return int(limit)
    value = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").replace("_", "")
    if not value:
        return DEFAULT_MAX_IMAGE_PIXELS
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"${MAX_IMAGE_PIXELS_ENV} must be a positive whole number of pixels, got {value!r}")
    return int(value)


def resampling(name: str) -> Image.Resampling:
    """A resampling filter by name (``bicubic``, ``bilinear``, ``lanczos``, ...)."""
    if name.lower() not in RESAMPLING:
        raise ValueError(f"unknown resampling filter {name!r}; choose one of {', '.join(RESAMPLING)}")
    return RESAMPLING[name.lower()]


class NoPixelDataError(ValueError):
    """16-bit or float data with nothing to show: every band is all NaN/inf or constant."""


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


def _has_range(band: np.ndarray) -> bool:
    finite = band[np.isfinite(band)] if np.issubdtype(band.dtype, np.floating) else band
    return finite.size > 0 and finite.min() < finite.max()


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
        if not any(_has_range(array[:, :, i]) for i in range(array.shape[-1])):
            raise NoPixelDataError("no usable pixel values: every band is all NaN/inf or constant")
        out = np.stack([stretch_to_uint8(array[:, :, i]) for i in range(array.shape[-1])], axis=-1)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(out), mode="RGB")


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "L"):
        return image.convert("RGB")
    if image.mode in _WIDE_MODES:
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
    resize_to: int | None = None,
    resample: str = "bicubic",
    max_image_pixels: int | None = None,
) -> Image.Image:
    """Open ``source`` and return an 8-bit RGB image within the pixel budget.

    ``resize_to``: first resize to that square side with ``resample`` (the original Remote_Scorer's
    inference: 512, bicubic), then apply the budget. ``max_image_pixels``: the decompression-bomb
    limit (see the module docstring). Raises :class:`ImageLoadError` naming the file when it is
    missing, over the limit, without usable pixel values, or cannot be decoded.
    """
    limit = pixel_limit(max_image_pixels)
    if isinstance(source, Image.Image):
        _check_size(source.size, limit, "image")
        rgb = _pil_to_rgb(source)
    else:
        rgb = _decode(Path(source), limit, max_pixels)
    if resize_to:
        rgb = rgb.resize((int(resize_to), int(resize_to)), resampling(resample))
    return fit_pixel_budget(rgb, min_pixels, max_pixels)


def _check_size(size: tuple[int, int], limit: int, name: str, path: Path | None = None) -> None:
    width, height = size
    if width * height > limit:
        raise ImageLoadError(f"{name} has {width}×{height} pixels, more than the limit of {limit:,} "
                             f"(${MAX_IMAGE_PIXELS_ENV} or max_image_pixels raises it); tile the scene first", path)


def _decode(path: Path, limit: int, max_pixels: int | None) -> Image.Image:
    """The file → RGB, its header's size checked against ``limit`` before any pixel is decoded."""
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}", path)
    tiff = path.suffix.lower() in _TIFF_SUFFIXES
    try:
        with Image.open(path) as opened:  # reads the header only
            _check_size(opened.size, limit, f"image {path}", path)
            if max_pixels and not tiff:
                opened.draft("RGB", _draft_size(opened.size, max_pixels))  # JPEG: decode at lower res
            if not (tiff and _pil_truncates(opened)):
                try:
                    return _pil_to_rgb(opened)
                except (OSError, ValueError) as err:
                    if not tiff or isinstance(err, NoPixelDataError):
                        raise
        return _open_tiff(path, limit)  # a TIFF layout PIL cannot decode, or not without losing bits
    except UnidentifiedImageError:
        if not tiff:
            raise ImageLoadError(f"cannot read image {path}: not a recognised image format", path) from None
        return _open_tiff(path, limit)
    except ImageLoadError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageLoadError(f"cannot read image {path}: {err}", path) from err


def _pil_truncates(image: Image.Image) -> bool:
    """A 16-bit multi-band TIFF that PIL opens as 8-bit RGB(A) by keeping each sample's high byte."""
    bits = image.tag_v2.get(258, (8,)) if hasattr(image, "tag_v2") else (8,)
    bits = bits if isinstance(bits, tuple) else (bits,)
    return max(bits) > 8 and image.mode not in _WIDE_MODES


def _open_tiff(path: Path, limit: int) -> Image.Image:
    """16-bit / float / multi-band GeoTIFFs that PIL cannot decode, through tifffile."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages.first
            _check_size((page.imagewidth, page.imagelength), limit, f"image {path}", path)
            array = tiff.asarray()
        return array_to_rgb(array)
    except ImageLoadError:
        raise
    except Exception as err:  # tifffile raises many types; all mean "this file is unreadable"
        raise ImageLoadError(f"cannot read image {path}: {err}", path) from err


def _draft_size(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, (max_pixels / (width * height)) ** 0.5)
    return max(1, int(width * scale)), max(1, int(height * scale))
