"""Images as remote-sensing users have them all become 8-bit RGB within the pixel budget."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from scorer.images import MAX_IMAGE_PIXELS_ENV, MIN_SIDE, ImageLoadError, load_image, stretch_to_uint8


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


def test_16bit_rgb_tiff_is_stretched_not_cut_to_its_high_byte(tmp_path):
    rgb = np.random.default_rng(6).integers(0, 4000, (40, 50, 3)).astype(np.uint16)  # 12-bit optical
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb, photometric="rgb")  # PIL alone reads this as 8-bit RGB, max 15
    out = np.asarray(load_image(tmp_path / "rgb16.tif"))
    assert np.array_equal(out[:, :, 0], stretch_to_uint8(rgb[:, :, 0])) and out.max() == 255


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


def test_scene_over_the_pixel_limit_is_refused_by_name(tmp_path, monkeypatch):
    Image.new("RGB", (200, 120)).save(tmp_path / "scene.png")
    with pytest.raises(ImageLoadError, match=r"scene.png has 200×120 pixels, more than the limit of 10,000"):
        load_image(tmp_path / "scene.png", max_image_pixels=100 * 100)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "10000")
    with pytest.raises(ImageLoadError, match="scene.png"):
        load_image(tmp_path / "scene.png")
    assert load_image(tmp_path / "scene.png", max_image_pixels=200 * 120).size == (200, 120)
    monkeypatch.delenv(MAX_IMAGE_PIXELS_ENV)
    assert load_image(tmp_path / "scene.png").size == (200, 120)  # the 150 MP default


def test_tiff_over_the_pixel_limit_is_refused_before_tifffile_reads_it(tmp_path):
    tifffile.imwrite(tmp_path / "scene.tif", np.zeros((3, 150, 100), dtype=np.uint16),
                     photometric="minisblack", planarconfig="separate")
    with pytest.raises(ImageLoadError, match=r"scene.tif has 100×150 pixels"):
        load_image(tmp_path / "scene.tif", max_image_pixels=100 * 100)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bitmap_bomb(path, side: int) -> None:
    """A valid all-black 1-bit PNG of side² pixels, compressed row block by row block (tiny in memory)."""
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row * min(256, side - start)) for start in range(0, side, 256))
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", data + compressor.flush()) + _png_chunk(b"IEND", b""))


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc to read peak memory")
def test_decompression_bombs_cost_no_memory(tmp_path):
    """Issue 9's repros: 31,600² in 121 KB (5.7 GB decoded) and 20,000² 1-bit in 48 KB (3.2 GB)."""
    bombs = {31_600: tmp_path / "bomb31600.png", 20_000: tmp_path / "bomb20000.png"}
    for side, path in bombs.items():
        write_bitmap_bomb(path, side)
        assert path.stat().st_size < 130_000  # 121 KB and 48 KB, as in the issue
    script = textwrap.dedent(f"""
        import re, sys
        from pathlib import Path
        from scorer.images import ImageLoadError, load_image

        def peak_mib():  # this process's resident high-water mark (VmHWM is reset by exec)
            return int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text())[1]) // 1024

        before = peak_mib()
        for path in {[str(p) for p in bombs.values()]!r}:
            try:
                load_image(path, max_pixels=401408)
            except ImageLoadError as err:
                print(err)
            else:
                sys.exit(f"{{path}} was decoded")
        print("peak_growth_mib", peak_mib() - before)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "bomb31600.png has 31600×31600 pixels, more than the limit of 150,000,000" in lines[0]
    assert "bomb20000.png has 20000×20000 pixels" in lines[1]
    assert int(lines[2].split()[1]) < 50  # MiB beyond the imports: nothing was decoded


def test_bomb_under_a_raised_limit_decodes_to_the_budget(tmp_path):
    write_bitmap_bomb(tmp_path / "b.png", 3000)
    out = load_image(tmp_path / "b.png", max_pixels=256 * 256, max_image_pixels=10_000_000)
    assert out.mode == "RGB" and out.size == (256, 256) and not np.asarray(out).any()


@pytest.mark.parametrize("data", [np.full((40, 50), np.nan, np.float32), np.full((40, 50), 3.5, np.float32),
                                  np.full((3, 40, 50), 700, np.uint16)], ids=["all-nan", "constant", "constant16"])
def test_float_tiff_without_usable_values_is_an_error_naming_the_file(tmp_path, data):
    tifffile.imwrite(tmp_path / "empty.tif", data)
    with pytest.raises(ImageLoadError, match=r"empty.tif.*no usable pixel values") as info:
        load_image(tmp_path / "empty.tif")
    assert info.value.path == str(tmp_path / "empty.tif")


def test_one_dead_band_among_good_ones_still_loads(tmp_path):
    data = np.random.default_rng(4).random((3, 40, 50)).astype(np.float32)
    data[2] = np.nan
    tifffile.imwrite(tmp_path / "partial.tif", data, photometric="minisblack", planarconfig="separate")
    out = np.asarray(load_image(tmp_path / "partial.tif"))
    assert out[:, :, 0].std() > 30 and not out[:, :, 2].any()


def test_square_resize_first_as_the_original_inference(tmp_path):
    pixels = np.random.default_rng(5).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    path = _save(Image.fromarray(pixels), tmp_path / "a.png")
    out = load_image(path, min_pixels=3136, max_pixels=401408, resize_to=512, resample="bicubic")
    expected = Image.open(path).convert("RGB").resize((512, 512), Image.BICUBIC)
    assert out.size == (512, 512) and np.array_equal(np.asarray(out), np.asarray(expected))
    with pytest.raises(ValueError, match="unknown resampling filter 'cubic'"):
        load_image(path, resize_to=512, resample="cubic")
