"""Every GPU figure of docs/benchmarks.md in one run of at most 8 minutes, for the real-size Qwen2.5-VL-3B.

    python bench/device_check.py --reference ../shared/reference/qwen2.5-vl-3b-instruct [--out DIR]
    python bench/device_check.py --tiny --device cpu          # the same code at tiny size (the test suite)

The 3B is built on the device from ``--reference``'s config.json with random weights (transformers' own
initialisation, bf16; bench/real_size.py) and the tiny backbone's processor (same vocabulary, same
patching). Inputs are UC Merced-like: distinct 256×256 noise images (18×18 patches → 81 tokens) written
as PNG files, distinct ~30-token captions. Sections, each within its own time budget and in try/except
(a failing section prints ``<section>=failed: <error>`` and the run goes on; a CUDA OOM in one setting
is that setting's result, ``=oom``):

1. ``matmul``: the measured dense rate of an 8192³ bf16 matmul (1024³ fp32 on CPU), TFLOP/s.
2. ``rank``: ``Scorer.embed_images`` / ``Scorer.embed_texts`` (what ``Scorer.rank`` runs) at batch 1, 16
   and 64, cold cache: images/s and captions/s.
3. ``per_pair``: the original project's per-pair scoring (one image and one caption per forward, as
   bench_rank.py) against ``Scorer.rank`` (batched, each image and distinct caption once) on the same
   images × 20 captions: ``ratio_vs_per_pair``.
4. ``generate``: ``LocalQwenGenerator`` (the app's caption generation), new tokens/s at batch 1 and 16,
   every caption forced to the same number of new tokens (as bench_generate.py).
5. ``train``: ``trainer.train`` on configs/ucm_3b_lora.yaml's recipe (LoRA r16 on both towers, bf16
   autocast, infonce+focal_triplet, 4 negatives per triplet), grad_accum 1, at batch 8 and 32, with and
   without gradient checkpointing: triplets/s over the steps after the warm-up ones, peak memory
   (``torch.cuda.max_memory_allocated``; max RSS on CPU) and MFU.

MFU formula (model FLOPs, recomputation by gradient checkpointing not counted, attention scores left out:
< 5 % at 81 image tokens per window and ~30-token captions)::

    FLOPs per step = 4 · (N_vision · patches + N_text · caption_tokens)
                   = forward 2·N·T + backward 2·N·T (activation gradients only: the base weights are
                     frozen under LoRA, so there are no weight-gradient matmuls but LoRA's, negligible)

N_vision = the vision tower's parameters per patch (patch embedding, blocks, and the merger's ÷ 4: it runs
once per 2×2 patches); N_text = the language
model's parameters less its input embeddings (a lookup); patches = rows of ``pixel_values`` the vision
tower saw, caption_tokens = non-padding tokens the language model saw (counted by forward hooks).
MFU = FLOPs/s ÷ peak, against the datasheet's 989 TFLOP/s dense bf16 of an H200 and against the measured
matmul rate of section 1.

Output: one ``key=value`` line per figure (repeated together at the end), and with ``--out`` (default
``$OUT``) a markdown table ``device_check.md``, rewritten after every section.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the training loop's progress bar would flood the log

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_size import TokenCounter, counted_builder, random_real_size_scorer  # noqa: E402  (bench/)

REFERENCE_3B = ROOT.parent / "shared" / "reference" / "qwen2.5-vl-3b-instruct"
H200_BF16_DENSE_TFLOPS = 989.0
SCENES = ["residential area", "parking lot", "harbor", "farmland", "freeway", "airport", "forest", "river",
          "beach", "golf course", "baseball field", "storage tank yard", "tennis court", "intersection"]
THINGS = ["houses", "cars", "trees", "boats", "roads", "buildings", "planes", "tanks", "fields", "lanes"]
COLOURS = ["red", "white", "gray", "green", "dark", "bright", "brown", "blue"]


@dataclass
class Sizes:
    """How much work each section does: the real run's, or a few seconds' worth on CPU with --tiny."""

    image_size: int = 256
    rank_images: dict[int, int] = field(default_factory=lambda: {1: 16, 16: 64, 64: 192})
    pair_images: int = 4
    pair_captions: int = 20
    gen_images: dict[int, int] = field(default_factory=lambda: {1: 4, 16: 16})
    gen_tokens: int = 32
    train_records: int = 64
    train_steps: int = 12
    train_warmup: int = 2

    @classmethod
    def tiny(cls) -> Sizes:
        return cls(image_size=56, rank_images={1: 2, 16: 16, 64: 64}, pair_images=2, pair_captions=3,
                   gen_images={1: 1, 16: 16}, gen_tokens=2, train_records=32, train_steps=3, train_warmup=1)


class Report:
    """``key=value`` lines as they come, and the markdown table in ``out`` after every section."""

    def __init__(self, out: str | None, header: str):
        self.out = Path(out) if out else None
        self.header = header
        self.rows: list[tuple[str, str, str]] = []

    def add(self, key: str, value, note: str = "") -> None:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        self.rows.append((key, text, note))
        print(f"{key}={text}", flush=True)

    def write(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        lines = [self.header, "", "| key | value | what |", "|---|---|---|"]
        lines += [f"| `{key}` | {value} | {note} |" for key, value, note in self.rows]
        tmp = self.out / "device_check.md.tmp"
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, self.out / "device_check.md")

    def summary(self) -> None:
        print("---- all figures ----")
        for key, value, _ in self.rows:
            print(f"{key}={value}")


@dataclass
class Run:
    args: argparse.Namespace
    sizes: Sizes
    device: torch.device
    dtype: torch.dtype
    report: Report
    data: Path
    images: list[str]
    captions: list[str]
    deadline: float
    model: object = None
    processor: object = None
    matmul_tflops: float | None = None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def left(self) -> float:
        return self.deadline - time.perf_counter()


# -- inputs ---------------------------------------------------------------------------------------------------
def noise_image(index: int, size: int) -> Image.Image:
    rng = np.random.default_rng(index)
    coarse = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)  # blocks: photo-like PNG sizes
    fine = rng.integers(0, 48, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(coarse, np.ones((8, 8, 1), dtype=np.uint8)) // 2 + fine)


def make_caption(index: int) -> str:
    rng = np.random.default_rng(10_000 + index)
    scene, thing, other = rng.choice(SCENES), rng.choice(THINGS), rng.choice(THINGS)
    colour, colour2 = rng.choice(COLOURS), rng.choice(COLOURS)
    return (f"A {scene} with {int(rng.integers(2, 60))} {colour} {thing} arranged in rows along the {other}, "
            f"next to {int(rng.integers(2, 30))} {colour2} {rng.choice(THINGS)} and a narrow road, scene {index}.")


def write_inputs(data: Path, n_images: int, n_captions: int, size: int) -> tuple[list[str], list[str]]:
    (data / "imgs").mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(n_images):
        path = data / "imgs" / f"{i}.png"
        noise_image(i, size).save(path)
        images.append(str(path))
    return images, [make_caption(i) for i in range(n_captions)]


# -- sections -------------------------------------------------------------------------------------------------
def section_matmul(run: Run) -> None:
    cuda = run.device.type == "cuda"
    n, dtype = (8192, torch.bfloat16) if cuda else (1024, torch.float32)
    a = torch.randn(n, n, device=run.device, dtype=dtype)
    b = torch.randn(n, n, device=run.device, dtype=dtype)
    best = math.inf
    for repeat in range(4):  # the first is the warm-up
        run.sync()
        start = time.perf_counter()
        for _ in range(50 if cuda else 5):
            a @ b
        run.sync()
        if repeat:
            best = min(best, (time.perf_counter() - start) / (50 if cuda else 5))
    run.matmul_tflops = 2 * n**3 / best / 1e12
    run.report.add("matmul_tflops", run.matmul_tflops, f"measured {n}³ {str(dtype)[6:]} matmul, best of 3")


def build_inference_model(run: Run) -> None:
    from scorer import new_scorer

    start = time.perf_counter()
    if run.args.tiny:
        run.model, run.processor = new_scorer("tiny", device=str(run.device), dtype=run.dtype)
    else:
        run.model, run.processor = random_real_size_scorer(run.args.reference, run.device, run.dtype)
    run.sync()
    run.report.add("build_seconds", time.perf_counter() - start, "random-weight model built on the device")
    tokens = [len(ids) for ids in run.processor.tokenize(run.captions)]
    run.report.add("caption_tokens_mean", float(np.mean(tokens)), "tokens per caption")


def section_rank(run: Run) -> None:
    from scorer import Scorer

    for batch, n_images in run.sizes.rank_images.items():
        if run.left() < 0:
            raise TimeoutError(f"time budget spent before batch {batch}")
        images, captions = run.images[:n_images], run.captions[:2 * n_images]
        Scorer(run.model, run.processor, "warm-up", batch_size=batch).rank([(images[0], captions[:batch])])
        for kind, embed, items in (("images", "embed_images", images), ("captions", "embed_texts", captions)):
            scorer = Scorer(run.model, run.processor, "bench", batch_size=batch)  # cold cache
            start = time.perf_counter()
            getattr(scorer, embed)(items)
            rate = len(items) / (time.perf_counter() - start)
            run.report.add(f"rank_b{batch}_{kind}_per_s", rate, f"{len(items)} {kind}, batch {batch}, cold cache")


def per_pair(run: Run, items: list[tuple[str, list[str]]]) -> float:
    """The original's ``SimilarityScorer.score``: one image and one caption per forward, nothing reused."""
    model, processor = run.model, run.processor
    start = time.perf_counter()
    with torch.inference_mode():
        for image, captions in items:
            for caption in captions:
                pixels = {k: v.to(run.device) for k, v in processor.images([image]).items()}
                text = processor.processor(text=[caption], padding=True, truncation=True, return_tensors="pt")
                image_emb = model.encode_images(**pixels)
                text_emb = model.encode_texts(input_ids=text["input_ids"].to(run.device),
                                              attention_mask=text["attention_mask"].to(run.device))
                float(image_emb[0] @ text_emb[0])
    return time.perf_counter() - start


def section_per_pair(run: Run) -> None:
    from scorer import Scorer

    n, m = run.sizes.pair_images, run.sizes.pair_captions
    items = [(run.images[i], run.captions[i * m:(i + 1) * m]) for i in range(n)]
    Scorer(run.model, run.processor, "warm-up", batch_size=32).rank(items[:1])
    per_pair(run, [(items[0][0], items[0][1][:2])])
    start = time.perf_counter()
    Scorer(run.model, run.processor, "bench", batch_size=32).rank(items)
    batched = time.perf_counter() - start
    baseline = per_pair(run, items)
    run.report.add("per_pair_seconds", baseline, f"{n * m} pairs, one forward per image and per caption")
    run.report.add("batched_seconds", batched, f"the same {n} images × {m} captions through Scorer.rank, batch 32")
    run.report.add("ratio_vs_per_pair", baseline / batched, "per-pair time ÷ batched time")


def section_generate(run: Run) -> None:
    from scorer.generation import GenerationSettings, LocalQwenGenerator

    tokens = run.sizes.gen_tokens
    pictures = [noise_image(50_000 + i, run.sizes.image_size) for i in range(max(run.sizes.gen_images.values()))]
    with torch.inference_mode():
        for batch, n_images in run.sizes.gen_images.items():
            if run.left() < 0:
                raise TimeoutError(f"time budget spent before batch {batch}")
            settings = GenerationSettings(max_new_tokens=tokens, min_new_tokens=tokens, batch_size=batch, seed=0)
            generator = LocalQwenGenerator(run.model, run.processor, settings)
            generator.generate_captions(pictures[:batch], n=1)  # warm-up
            run.sync()
            start = time.perf_counter()
            captions = generator.generate_captions(pictures[:n_images], n=1)
            run.sync()
            seconds = time.perf_counter() - start
            if sum(map(len, captions)) != n_images:
                raise RuntimeError(f"batch {batch}: {sum(map(len, captions))} captions for {n_images} images")
            run.report.add(f"generate_b{batch}_tokens_per_s", n_images * tokens / seconds,
                           f"{n_images} images, {tokens} new tokens each, sampling")
            run.report.add(f"generate_b{batch}_captions_per_s", n_images / seconds, "")


# -- training ---------------------------------------------------------------------------------------------------
def write_triplets(run: Run) -> Path:
    records = [{"image": f"imgs/{i}.png", "pos": run.captions[5 * i], "negs": run.captions[5 * i + 1:5 * i + 5]}
               for i in range(run.sizes.train_records)]
    path = run.data / "triplets.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB


def train_setting(run: Run, batch: int, checkpointing: bool, budget: float) -> None:
    from trainer import TrainConfig, train
    from trainer.config import load_yaml

    key, sizes = f"train_b{batch}_gc{int(checkpointing)}", run.sizes
    recipe = load_yaml(ROOT / "configs" / "ucm_3b_lora.yaml")
    counters: list[TokenCounter] = []
    stamps: list[tuple[float, int, int]] = []
    stop, end = threading.Event(), time.perf_counter() + budget

    def progress(_: dict) -> None:
        stamps.append((time.perf_counter(), *counters[-1].snapshot()))
        if time.perf_counter() > end and len(stamps) >= sizes.train_warmup + 2:
            stop.set()  # over budget: train() stops after this step

    reference = None if run.args.tiny else run.args.reference
    with tempfile.TemporaryDirectory() as out, counted_builder(reference, counters):
        recipe.update(model="tiny" if run.args.tiny else str(run.args.reference), train_file=str(write_triplets(run)),
                      image_root=str(run.data), output_dir=out, batch_size=batch, grad_accum=1,
                      gradient_checkpointing=checkpointing, max_steps=sizes.train_steps, save_every=10_000,
                      log_every=10_000, augment=False, cache_images=True)
        if run.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(run.device)
        try:
            train(TrainConfig.from_dict(recipe), on_progress=progress, stop_event=stop)
        except torch.OutOfMemoryError:
            run.report.add(f"{key}_triplets_per_s", "oom", f"CUDA out of memory after {len(stamps)} steps")
            return
    if len(stamps) < sizes.train_warmup + 2:
        raise RuntimeError(f"{key}: only {len(stamps)} steps ran, too few to time")
    (t0, p0, n0), (t1, p1, n1) = stamps[sizes.train_warmup - 1], stamps[-1]
    steps, seconds = len(stamps) - sizes.train_warmup, t1 - t0
    tflops = counters[-1].flops(p1 - p0, n1 - n0) / seconds / 1e12
    what = f"batch {batch}, gradient checkpointing {'on' if checkpointing else 'off'}"
    run.report.add(f"{key}_triplets_per_s", steps * batch / seconds, f"{what}, {steps} steps timed")
    run.report.add(f"{key}_peak_gib", peak_gib(run.device),
                   "torch.cuda.max_memory_allocated" if run.device.type == "cuda" else "max RSS of the process")
    run.report.add(f"{key}_tflops", tflops, f"model FLOPs/s, 4·N·tokens; {(n1 - n0) / steps:.0f} caption tokens "
                   f"and {(p1 - p0) / steps:.0f} patches per step")
    run.report.add(f"{key}_mfu_datasheet", tflops / H200_BF16_DENSE_TFLOPS, f"vs {H200_BF16_DENSE_TFLOPS:.0f} TFLOP/s")
    if run.matmul_tflops:
        run.report.add(f"{key}_mfu_measured", tflops / run.matmul_tflops, "vs the measured matmul rate")


def section_train(run: Run) -> None:
    settings = [(8, False), (8, True), (32, False), (32, True)]
    for number, (batch, checkpointing) in enumerate(settings):
        left = run.left()
        if left <= 0:
            run.report.add(f"train_b{batch}_gc{int(checkpointing)}_triplets_per_s", "skipped", "time budget spent")
            continue
        try:
            train_setting(run, batch, checkpointing, budget=left / (len(settings) - number))
        except Exception as err:  # one failing setting must not lose the others
            run.report.add(f"train_b{batch}_gc{int(checkpointing)}", f"failed: {one_line(err)}")
        free_memory()


# -- the run ------------------------------------------------------------------------------------------------------
def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def guarded(run: Run, name: str, section, budget: float, end: float) -> None:
    """Run one section until ``min(now + budget, end)``; an error is reported as the section's result."""
    run.deadline = min(time.perf_counter() + budget, end)
    if run.left() <= 0:
        run.report.add(name, "skipped", "time budget spent")
        return
    start = time.perf_counter()
    try:
        section(run)
    except Exception as err:
        import traceback

        traceback.print_exc()
        run.report.add(name, f"failed: {one_line(err)}")
    finally:
        print(f"# {name}: {time.perf_counter() - start:.1f} s", flush=True)
        run.report.write()
        free_memory()


SECTIONS = ("rank", "per_pair", "generate", "train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=REFERENCE_3B,
                        help="folder with the real model's config.json (+ preprocessor_config.json)")
    parser.add_argument("--tiny", action="store_true", help="the tiny offline model and tiny sizes (tests)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for device_check.md (default $OUT)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="run only these sections (a rerun of one that failed)")
    return parser.parse_args(argv)


def header(args: argparse.Namespace, device: torch.device) -> str:
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    model = "tiny" if args.tiny else f"random-weight {args.reference.name}"
    return (f"device_check: {name}, torch {torch.__version__}, transformers {transformers.__version__}, model {model}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    end = start + args.budget
    device = torch.device(args.device)
    if not args.tiny and not (args.reference / "config.json").is_file():
        sys.exit(f"no config.json in --reference {args.reference}")
    sizes = Sizes.tiny() if args.tiny else Sizes()
    report = Report(args.out, header(args, device))
    print(report.header, flush=True)
    with tempfile.TemporaryDirectory() as data:
        n_images = max(*sizes.rank_images.values(), sizes.pair_images, sizes.train_records)
        n_captions = max(2 * max(sizes.rank_images.values()), sizes.pair_images * sizes.pair_captions,
                         5 * sizes.train_records)
        images, captions = write_inputs(Path(data), n_images, n_captions, sizes.image_size)
        run = Run(args, sizes, device, torch.bfloat16 if device.type == "cuda" else torch.float32, report,
                  Path(data), images, captions, end)
        before_train = end - 0.45 * args.budget  # the training figures keep at least 45 % of the time
        guarded(run, "matmul", section_matmul, 20, before_train)
        guarded(run, "build", build_inference_model, 90, before_train)
        inference = {"rank": section_rank, "per_pair": section_per_pair, "generate": section_generate}
        if run.model is not None:
            for name, section in inference.items():
                if name in args.sections:
                    guarded(run, name, section, 60, before_train)
        run.model = run.processor = None
        free_memory()
        if "train" in args.sections:
            guarded(run, "train", section_train, args.budget, end)
    report.add("total_wall_s", time.perf_counter() - start, "the whole run")
    report.write()
    report.summary()


if __name__ == "__main__":
    main()
