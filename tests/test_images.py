"""Images as remote-sensing users have them all become 8-bit RGB within the pixel budget."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from scorer.images import MIN_SIDE, ImageLoadError, load_image, stretch_to_uint8


def _save(img: Image.Image, path):
    img.save(path)
    return path


def test_8bit_rgb_is_unchanged(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    out = load_image(_save(Image.fromarray(pixels), tmp_path / "a.png"))
    assert out.mode == "RGB" and out.size == (80, 64)
    assert np.array_equal(np.asarray(out), pixels)


def test_grayscale_becomes_three_equal_bands(tmp_path):
    gray = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)
    out = np.asarray(load_image(_save(Image.fromarray(gray, "L"), tmp_path / "g.png")))
    assert out.shape == (64, 64, 3) and np.array_equal(out[:, :, 0], gray) and np.array_equal(out[:, :, 2], gray)


def test_single_band_float_sar_is_percentile_stretched(tmp_path):
    rng = np.random.default_rng(1)
    sar = rng.gamma(1.0, 0.05, (100, 100)).astype(np.float32)  # speckle-like backscatter
    sar[0, 0] = 1e6  # one bright outlier must not flatten the image
    sar[0, 1] = np.nan
    path = tmp_path / "sar.tif"
    tifffile.imwrite(path, sar)
    out = np.asarray(load_image(path))
    assert out.shape == (100, 100, 3)
    low, high = np.nanpercentile(sar, [2, 98])
    middle = (sar > low) & (sar < high)
    assert out[:, :, 0][middle].std() > 30  # real contrast, not a black image
    assert out[0, 0, 0] == 255 and out[0, 1, 0] == 0


def test_16bit_tiff_single_and_multiband(tmp_path):
    rng = np.random.default_rng(2)
    single = rng.integers(200, 3000, (50, 60), dtype=np.uint16)
    Image.fromarray(single).save(tmp_path / "s16.tif")  # PIL mode I;16
    out = np.asarray(load_image(tmp_path / "s16.tif"))
    assert out.shape == (50, 60, 3) and out.max() == 255 and out.min() == 0
    multi = rng.integers(0, 10000, (4, 40, 30), dtype=np.uint16)  # planar 4-band (e.g. RGB + NIR)
    tifffile.imwrite(tmp_path / "m16.tif", multi, photometric="minisblack", planarconfig="separate")
    out = np.asarray(load_image(tmp_path / "m16.tif"))
    assert out.shape == (40, 30, 3)
    assert np.array_equal(out[:, :, 1], stretch_to_uint8(multi[1]))


def test_rgba_and_palette(tmp_path):
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[:, :16] = (200, 10, 10, 255)  # opaque red half; transparent half → black
    out = np.asarray(load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")))
    assert tuple(out[0, 0]) == (200, 10, 10) and tuple(out[0, 31]) == (0, 0, 0)
    palette = Image.fromarray(np.eye(32, dtype=np.uint8) * 255, "L").convert("P")
    assert load_image(_save(palette, tmp_path / "p.png")).mode == "RGB"


def test_large_image_is_bounded_and_tiny_image_is_scaled_up(tmp_path):
    big = Image.new("RGB", (4000, 3000), (10, 120, 30))
    out = load_image(_save(big, tmp_path / "big.jpg"), max_pixels=512 * 512)
    assert out.size[0] * out.size[1] <= 512 * 512 and abs(out.size[0] / out.size[1] - 4 / 3) < 0.02
    small = load_image(_save(Image.new("RGB", (5, 9), (1, 2, 3)), tmp_path / "small.png"), min_pixels=3136)
    assert min(small.size) >= MIN_SIDE and small.size[0] * small.size[1] >= 3136


def test_the_same_function_feeds_the_processor(tiny_scorer, tmp_path):
    rng = np.random.default_rng(3)
    tifffile.imwrite(tmp_path / "sar.tif", rng.random((70, 70)).astype(np.float32))
    batch = tiny_scorer.processor.images([tmp_path / "sar.tif"])
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]]  # 70 px → 56 px → 4×4 patches


def test_real_ucm_tiff_matches_its_png(ucm_dir):
    tif = sorted((ucm_dir / "imgs_tif").glob("*.tif"))[0]
    png = ucm_dir / "imgs" / (tif.stem + ".png")
    assert np.array_equal(np.asarray(load_image(tif)), np.asarray(load_image(png)))


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(ImageLoadError, match="not found: .*nope.png"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageLoadError, match="broken.png"):
        load_image(tmp_path / "broken.png")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageLoadError, match="broken.tif"):
        load_image(tmp_path / "broken.tif")


def test_scene_over_the_decode_limit_is_refused_by_name(tmp_path, monkeypatch):
    from scorer import images

    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 100 * 100)
    Image.new("RGB", (200, 120)).save(tmp_path / "scene.png")
    with pytest.raises(ImageLoadError, match=r"scene.png has 200×120 pixels"):
        load_image(tmp_path / "scene.png")
