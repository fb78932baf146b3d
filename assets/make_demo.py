"""Generate the offline demo set: small aerial-like scenes drawn from a scene description.

``python assets/make_demo.py [OUT_DIR]`` (default ``assets/demo``) writes ``imgs/scene_NN.png``
(256×256) and ``triplets.json`` in the ``seed-triplets`` format of docs/formats.md. Every caption is
derived from the description that drew the image: the positive states it, the hard negative changes
two or three of its details (counts, colours, sides), the short caption names the scene, and the other
negatives are partial or wrong descriptions. The same seed gives the same files.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 256
N_SCENES = 24
ROOF_COLOURS = {"red": (178, 52, 40), "blue": (52, 86, 170), "white": (232, 232, 228), "grey": (128, 128, 132)}
CROP_COLOURS = {"green": (86, 142, 58), "yellow": (206, 182, 92), "brown": (136, 100, 62)}
SIDES = ("left", "right", "top", "bottom")
COUNT_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Scene:
    """What an image shows; every caption is a function of these fields."""

    cls: str
    crop: str  # colour of the fields
    n_fields: int
    river_side: str | None  # the side the river runs along, or None
    n_roads: int  # straight roads crossing the scene
    n_buildings: int
    roof: str
    n_trees: int


def random_scene(rng: random.Random, cls: str) -> Scene:
    has_river = cls == "river" or rng.random() < 0.3
    return Scene(
        cls=cls,
        crop=rng.choice(list(CROP_COLOURS)),
        n_fields=rng.randint(4, 7) if cls == "farmland" else rng.randint(0, 3),
        river_side=rng.choice(SIDES) if has_river else None,
        n_roads=rng.randint(1, 2) if cls != "river" else rng.randint(0, 1),
        n_buildings=rng.randint(4, 8) if cls == "residential" else rng.randint(0, 3),
        roof=rng.choice(list(ROOF_COLOURS)),
        n_trees=rng.randint(2, 9),
    )


# -- drawing -----------------------------------------------------------------------------------------
def draw_scene(scene: Scene, rng: random.Random) -> Image.Image:
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, 6, (SIZE, SIZE, 3))
    base = np.clip(np.array([118, 128, 96]) + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(base, "RGB")
    draw = ImageDraw.Draw(image)
    _fields(draw, scene, rng)
    if scene.river_side:
        _river(draw, scene.river_side, rng)
    for k in range(scene.n_roads):
        _road(draw, k, rng)
    for _ in range(scene.n_buildings):
        _building(draw, scene.roof, rng)
    for _ in range(scene.n_trees):
        x, y, r = rng.randint(8, SIZE - 8), rng.randint(8, SIZE - 8), rng.randint(4, 8)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(34 + rng.randint(0, 20), 82, 38))
    return image


def _fields(draw: ImageDraw.ImageDraw, scene: Scene, rng: random.Random) -> None:
    colour = CROP_COLOURS[scene.crop]
    for i in range(scene.n_fields):
        x0, y0 = rng.randint(0, SIZE - 90), rng.randint(0, SIZE - 90)
        w, h = rng.randint(50, 90), rng.randint(50, 90)
        shade = tuple(max(0, c - 12 * (i % 2)) for c in colour)
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=shade)
        for stripe in range(x0, x0 + w, 6):  # furrows
            draw.line([stripe, y0, stripe, y0 + h], fill=tuple(max(0, c - 25) for c in shade), width=1)


def _river(draw: ImageDraw.ImageDraw, side: str, rng: random.Random) -> None:
    offset = rng.randint(20, 50)
    points = []
    for t in range(0, SIZE + 16, 16):
        wobble = int(10 * np.sin(t / 30.0 + rng.random()))
        along = offset + wobble if side in ("left", "top") else SIZE - offset + wobble
        points.append((along, t) if side in ("left", "right") else (t, along))
    draw.line(points, fill=(48, 92, 150), width=rng.randint(14, 22), joint="curve")


def _road(draw: ImageDraw.ImageDraw, k: int, rng: random.Random) -> None:
    at = rng.randint(60, SIZE - 60)
    line = [(at, 0), (at, SIZE)] if k % 2 == 0 else [(0, at), (SIZE, at)]
    draw.line(line, fill=(150, 146, 140), width=7)


def _building(draw: ImageDraw.ImageDraw, roof: str, rng: random.Random) -> None:
    x0, y0 = rng.randint(4, SIZE - 34), rng.randint(4, SIZE - 34)
    w, h = rng.randint(14, 30), rng.randint(12, 26)
    draw.rectangle([x0 + 3, y0 + 3, x0 + w + 3, y0 + h + 3], fill=(60, 60, 56))  # shadow
    draw.rectangle([x0, y0, x0 + w, y0 + h], fill=ROOF_COLOURS[roof], outline=(40, 40, 40))


# -- captions ----------------------------------------------------------------------------------------
def _count(n: int, noun: str) -> str:
    return f"{COUNT_WORDS[n] if n < len(COUNT_WORDS) else n} {noun}{'' if n == 1 else 's'}"


def describe(scene: Scene) -> str:
    parts = []
    if scene.n_buildings:
        roofs = "a " + scene.roof + " roof" if scene.n_buildings == 1 else scene.roof + " roofs"
        parts.append(f"{_count(scene.n_buildings, 'building')} with {roofs}")
    if scene.n_fields:
        parts.append(f"{_count(scene.n_fields, scene.crop + ' field')}")
    if scene.river_side:
        parts.append(f"a river along the {scene.river_side} side")
    if scene.n_roads:
        parts.append(_count(scene.n_roads, "straight road"))
    parts.append(_count(scene.n_trees, "tree"))
    return "An aerial view of " + ", ".join(parts[:-1]) + " and " + parts[-1] + "."


def hard_negative(scene: Scene, rng: random.Random) -> Scene:
    """The scene with two or three details changed, so its description is wrong but close."""
    changes = {
        "n_buildings": lambda s: s.n_buildings + rng.choice((1, 2)) if s.n_buildings else 0,
        "roof": lambda s: rng.choice([r for r in ROOF_COLOURS if r != s.roof]) if s.n_buildings else s.roof,
        "crop": lambda s: rng.choice([c for c in CROP_COLOURS if c != s.crop]) if s.n_fields else s.crop,
        "river_side": lambda s: rng.choice([d for d in SIDES if d != s.river_side]) if s.river_side else None,
        "n_trees": lambda s: s.n_trees + rng.choice((-2, 2)) if s.n_trees > 2 else s.n_trees + 3,
        "n_fields": lambda s: s.n_fields + 2 if s.n_fields else 0,
    }
    fields = dict(scene.__dict__)
    applicable = [k for k in changes if changes[k](scene) != getattr(scene, k)]
    for key in rng.sample(applicable, min(len(applicable), rng.choice((2, 3)))):
        fields[key] = changes[key](scene)
    return Scene(**fields)


def captions_for(scene: Scene, rng: random.Random) -> dict:
    pos = describe(scene)
    negs = [describe(hard_negative(scene, rng)), f"{scene.cls} area seen from above"]
    wrong_scene = Scene(**{**scene.__dict__, "river_side": None if scene.river_side else "left",
                           "n_roads": 2 - min(scene.n_roads, 2)})
    negs.append(describe(wrong_scene))
    negs.append(f"A dense forest with {_count(scene.n_trees + 20, 'tree')} and no buildings.")
    return {"pos": pos, "negs": [n for n in dict.fromkeys(negs) if n != pos], "class": scene.cls}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=str(Path(__file__).parent / "demo"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--count", type=int, default=N_SCENES)
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    (out / "imgs").mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    classes = ("farmland", "residential", "river")
    records = []
    for n in range(1, args.count + 1):
        scene = random_scene(rng, classes[(n - 1) % len(classes)])
        name = f"imgs/scene_{n:02d}.png"
        draw_scene(scene, rng).save(out / name, optimize=True)
        records.append({"image": name, **captions_for(scene, rng)})
    (out / "triplets.json").write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(records)} scenes to {out}")


if __name__ == "__main__":
    main()
