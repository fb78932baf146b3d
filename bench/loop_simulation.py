"""Active-learning simulation: does annotating the uncertain images first improve the ranking faster?

    python bench/loop_simulation.py [--data_dir ../shared/data/ucm] [--seeds 0 1 2] [--rounds 5] [--k 24]
    python bench/loop_simulation.py --quick          # reduced: one seed, two rounds, ≤ 3 minutes

An oracle annotator replays the ground truth of a seed-format triplet file through the app's own code,
with no browser: the images of a fixed held-out split (by image) are set aside; the others are imported
into a fresh store (``curation``), the queue (``curation.queue.next_image``) hands out k images per
round, the oracle accepts the positive, rejects the negatives and picks the positive as best
(``record_decision``), then a training run starts as the Train tab starts it (``loop.TrainingJobs``:
triplets exported from the store, human decisions only, split by image, trained in a process from the
active model, evaluated on the run's own held-out triplets, promoted when better). After each round the
active model is evaluated on the fixed held-out images with the trainer's protocol (global, hard and
rank accuracy). Strategies: ``uncertainty`` (smallest margin first), ``random`` (seeded random order)
and ``balanced`` (class-balanced uncertainty). Several seeds (training seed and random order) give
mean ± std. Writes ``results.json`` to ``--out_dir``, and the table and learning-curve PNG to
``--docs_dir`` (``docs/`` unless ``--quick``). The last line printed is
``uncertainty_vs_random_auc=<ratio>``: area under the held-out rank-accuracy curve (against decisions),
uncertainty ÷ random, means over the seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import random
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.decisions import record_decision  # noqa: E402
from curation.importers import ImportOptions, import_file  # noqa: E402
from curation.queue import QueueOptions, next_image  # noqa: E402
from curation.store import get_image  # noqa: E402
from curation.views import image_captions  # noqa: E402
from loop import AppConfig, Services, TrainForm  # noqa: E402
from loop.training import FINISHED  # noqa: E402
from trainer.config import TrainConfig, load_yaml  # noqa: E402
from trainer.evaluate import build_evaluator  # noqa: E402

log = logging.getLogger("loop_simulation")
ORACLE = "oracle"
METRICS = ("global_accuracy", "hard_accuracy", "rank_accuracy")
RECIPE_FIELDS = ("freeze_token_embeddings", "max_text_tokens", "head_lr", "weight_decay", "warmup_ratio",
                 "augment", "cache_images", "contrastive_negatives")


@dataclass(frozen=True)
class SimConfig:
    data_dir: Path
    out_dir: Path
    docs_dir: Path
    recipe: Path
    triplets: str = "triplets_train.json"  # the seed-format file in data_dir (its image paths are relative to it)
    strategies: tuple[str, ...] = ("uncertainty", "random", "balanced")
    seeds: tuple[int, ...] = (0, 1, 2)
    rounds: int = 4
    k: int = 30  # images annotated per round
    held_out: float = 0.2  # share of the images set aside (fixed, by image)
    epochs: float = 3.0  # per training run, over everything annotated so far
    max_images: int | None = None  # use only this many images of the data set (quick runs)
    resume: bool = False  # reuse the simulations of out_dir that finished (rebuilt from their stores)
    workers: int = 2  # simulations at once (processes; each training run is a process with one torch thread)


def queue_options(strategy: str, seed: int) -> QueueOptions:
    if strategy == "uncertainty":
        return QueueOptions()
    if strategy == "random":
        return QueueOptions(order="random", seed=seed)
    if strategy == "balanced":
        return QueueOptions(class_balance=True)
    raise ValueError(f"strategy {strategy!r} is not one of uncertainty, random, balanced")


def split_data(cfg: SimConfig) -> tuple[Path, Path, dict[str, str]]:
    """Seed-format pool and held-out files (fixed split by image, seed 0) and image → true positive."""
    path = cfg.data_dir / cfg.triplets
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (a seed-format triplet file is needed)")
    records = json.loads(path.read_text(encoding="utf-8"))
    if cfg.max_images:
        records = random.Random(1).sample(records, min(cfg.max_images, len(records)))
    images = sorted({r["image"] for r in records})
    random.Random(0).shuffle(images)
    held = set(images[: max(1, round(cfg.held_out * len(images)))])
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    pool_file, held_file = cfg.out_dir / "pool.json", cfg.out_dir / "held_out.json"
    pool_file.write_text(json.dumps([r for r in records if r["image"] not in held]), encoding="utf-8")
    held_file.write_text(json.dumps([r for r in records if r["image"] in held]), encoding="utf-8")
    print(f"{len(images) - len(held)} pool images, {len(held)} held-out images (fixed split)")
    return pool_file, held_file, {r["image"]: r["pos"] for r in records}


def base_model(cfg: SimConfig, recipe: TrainConfig) -> Path:
    """The untrained tiny scorer every simulation starts from (the recipe's pixel and text budget)."""
    from scorer import new_scorer, save_checkpoint
    from trainer.model_setup import fresh_scorer_config

    out = cfg.out_dir / "base"
    if not out.is_dir():
        model, processor = new_scorer("tiny", fresh_scorer_config(recipe), device="cpu", dtype="float32",
                                      seed=recipe.seed)
        save_checkpoint(model, processor, out, save_backbone=True)
    return out


def train_form(cfg: SimConfig, recipe: TrainConfig, seed: int) -> TrainForm:
    """The Train tab's form with the recipe's settings; trains on human decisions only."""
    extra = {name: getattr(recipe, name) for name in RECIPE_FIELDS}
    return TrainForm(loss=recipe.loss, epochs=cfg.epochs, lr=recipe.lr, lora_rank=0, human_only=True,
                     batch_size=recipe.batch_size, max_pixels=recipe.max_pixels,
                     recipe={**extra, "seed": seed, "save_every": 10_000})


def annotate(services: Services, options: QueueOptions, k: int, truth: dict[str, str]) -> tuple[int, int]:
    """The oracle takes k images from the queue and decides every caption; returns (images, decisions)."""
    conn = services.conn()
    _, model_id = services.scorer()
    images = decisions = 0
    for _ in range(k):
        image_id = next_image(conn, ORACLE, options)
        if image_id is None:
            break
        positive = truth[get_image(conn, image_id).path]
        for caption in image_captions(conn, image_id, model_id):
            for verdict in ("accept", "best") if caption.text == positive else ("reject",):
                record_decision(conn, image_id, caption.id, verdict, ORACLE, model_version=model_id,
                                score_shown=caption.score)
                decisions += 1
        images += 1
    return images, decisions


def train_round(services: Services, form: TrainForm) -> dict:
    """Start a run as the Train tab does and wait for it; returns its outcome (promotion included)."""
    run_id = services.training.start(form)
    while (snapshot := services.training.snapshot(run_id)).status not in FINISHED:
        time.sleep(0.5)
    if snapshot.status != "done":
        raise RuntimeError(f"training run {run_id} {snapshot.status}: {snapshot.result.get('error', '')}")
    promotion = snapshot.promotion
    return {"run": run_id, "promoted": bool(promotion and promotion.promoted),
            "run_held_out": snapshot.result["evaluation"]["new"]}


def simulate(cfg: SimConfig, strategy: str, seed: int, files: tuple[Path, Path, dict], base: Path,
             recipe: TrainConfig) -> list[dict]:
    """One strategy and seed: rounds of k images → retrain → evaluate the active model on the held-out set."""
    torch.set_num_threads(1)  # one core per simulation: the workers share the machine
    pool_file, held_file, truth = files
    data_dir = cfg.out_dir / f"{strategy}-seed{seed}"
    shutil.rmtree(data_dir, ignore_errors=True)
    services = Services(AppConfig(data_dir=data_dir, image_root=cfg.data_dir, checkpoint=base, device="cpu",
                                  max_pixels=recipe.max_pixels))
    options, form = queue_options(strategy, seed), train_form(cfg, recipe, seed)
    if options.order != "uncertainty":
        services.queue_scorer.stop()  # a random order needs no scores
    try:
        import_file(services.conn(), "seed-triplets", pool_file, ImportOptions(image_root=cfg.data_dir))
        evaluator, evaluated = build_evaluator(held_file, cfg.data_dir), {}
        images = decisions = 0
        points = [point(services, evaluator, evaluated, 0, 0, {"promoted": False})]
        for round_ in range(1, cfg.rounds + 1):
            services.queue_scorer.start()
            services.queue_scorer.wait()  # the queue is ordered by the active model's margins
            got, made = annotate(services, options, cfg.k, truth)
            images, decisions = images + got, decisions + made
            outcome = train_round(services, form)
            points.append(point(services, evaluator, evaluated, images, decisions, outcome))
            log.info("%s seed %d round %d: %s", strategy, seed, round_, points[-1])
        return points
    finally:
        services.close()


def point(services: Services, evaluator, evaluated: dict, images: int, decisions: int, outcome: dict) -> dict:
    """The active model's held-out metrics after a round (the trainer's evaluator, once per model version)."""
    with services.using_model() as (scorer, model_id):
        if model_id not in evaluated:
            evaluated[model_id] = {k: float(v) for k, v in evaluator(scorer.model, scorer.processor, 32).items()}
    return {"images": images, "decisions": decisions, "model": model_id, **outcome,
            **{name: evaluated[model_id][name] for name in METRICS}}


def recover(cfg: SimConfig, strategy: str, seed: int, held_file: Path) -> list[dict] | None:
    """A finished simulation's curve rebuilt from its store (None if it did not finish): the decisions made
    before each run, the model active after it (the run's own when promoted), evaluated on the held-out set."""
    from curation.models import get_model_version, list_training_runs
    from curation.store import open_store
    from scorer import load_checkpoint

    db = cfg.out_dir / f"{strategy}-seed{seed}" / "store.sqlite"
    conn = open_store(db) if db.is_file() else None
    runs = [r for r in list_training_runs(conn) if r.status == "done"] if conn else []
    if len(runs) < cfg.rounds:
        return None
    evaluator, evaluated = build_evaluator(held_file, cfg.data_dir), {}
    active, points = runs[0].config["active_model"], []
    for run in [None, *runs[: cfg.rounds]]:
        until = run.created_at if run else ""
        images, decisions = conn.execute("SELECT count(DISTINCT image_id), count(*) FROM decisions"
                                         " WHERE created_at <= ?", (until,)).fetchone()
        promoted = bool(run and run.metrics["promotion"]["promoted"])
        active = run.model_version_id if promoted else active
        if active not in evaluated:
            model, processor = load_checkpoint(get_model_version(conn, active).path, device="cpu")
            evaluated[active] = {k: float(v) for k, v in evaluator(model, processor, 32).items()}
        points.append({"images": images, "decisions": decisions, "model": active, "promoted": promoted,
                       **({"run": run.id} if run else {}), **{m: evaluated[active][m] for m in METRICS}})
    conn.close()
    return points


def auc(points: list[dict], metric: str = "rank_accuracy") -> float:
    """Area under the metric-vs-decisions curve, divided by the decisions span (a mean accuracy)."""
    x = np.array([p["decisions"] for p in points], dtype=float)
    y = np.array([p[metric] for p in points], dtype=float)
    return float(np.trapezoid(y, x) / (x[-1] - x[0])) if x[-1] > x[0] else float(y[0])


def summarize(runs: dict[str, dict[int, list[dict]]]) -> dict[str, dict]:
    """Per strategy: mean and std over seeds of each metric at each round, and of the AUC."""
    summary = {}
    for strategy, by_seed in runs.items():
        curves = list(by_seed.values())
        rounds = min(len(c) for c in curves)
        table = []
        for r in range(rounds):
            row = {"decisions": float(np.mean([c[r]["decisions"] for c in curves])),
                   "images": float(np.mean([c[r]["images"] for c in curves]))}
            for name in METRICS:
                values = [c[r][name] for c in curves]
                row[name] = (float(np.mean(values)), float(np.std(values)))
            table.append(row)
        aucs = [auc(c[:rounds]) for c in curves]
        promoted = sum(p["promoted"] for c in curves for p in c[1:rounds])
        summary[strategy] = {"rounds": table, "auc": (float(np.mean(aucs)), float(np.std(aucs))),
                             "promoted": promoted, "runs": len(curves) * (rounds - 1)}
    return summary


def markdown(cfg: SimConfig, summary: dict[str, dict], seconds: float, ratio: float) -> str:
    """The result table: held-out metrics (mean ± std over seeds) after each round, per strategy."""
    lines = [f"Data: `{cfg.data_dir}`; seeds {list(cfg.seeds)}; {cfg.rounds} rounds of {cfg.k} images; "
             f"held-out share {cfg.held_out}; {cfg.epochs:g} epochs per run; wall time {seconds / 60:.1f} min.", "",
             "| strategy | images | decisions | global | hard | rank (best caption) |", "|---|---|---|---|---|---|"]
    for strategy, result in summary.items():
        for row in result["rounds"]:
            cells = " | ".join(f"{row[m][0]:.3f} ± {row[m][1]:.3f}" for m in METRICS)
            lines.append(f"| {strategy} | {row['images']:.0f} | {row['decisions']:.0f} | {cells} |")
    lines += ["", "| strategy | AUC of rank accuracy (mean ± std) | runs promoted |", "|---|---|---|"]
    for strategy, result in summary.items():
        mean, std = result["auc"]
        lines.append(f"| {strategy} | {mean:.4f} ± {std:.4f} | {result['promoted']} / {result['runs']} |")
    lines += ["", f"`uncertainty_vs_random_auc={ratio:.4f}`", ""]
    return "\n".join(lines)


def plot(summary: dict[str, dict], path: Path) -> None:
    """Held-out global, hard and rank accuracy against decisions, one line per strategy (± std band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.4), sharex=True)
    for ax, name in zip(axes, METRICS):
        for strategy, result in summary.items():
            x = [row["decisions"] for row in result["rounds"]]
            mean = np.array([row[name][0] for row in result["rounds"]])
            std = np.array([row[name][1] for row in result["rounds"]])
            ax.plot(x, mean, marker="o", label=strategy)
            ax.fill_between(x, mean - std, mean + std, alpha=0.15)
        ax.set_title(f"held-out {name.replace('_', ' ')}")
        ax.set_xlabel("oracle decisions")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def auc_ratio(uncertainty_area: float, random_area: float) -> float:
    """Uncertainty's area ÷ random's: ``inf`` when only random's area is 0, ``nan`` when both are (a tiny run
    whose curves never leave 0 has no ratio; it is printed as such, not as a crash or a made-up 1.0)."""
    if random_area > 0:
        return uncertainty_area / random_area
    return math.inf if uncertainty_area > 0 else math.nan


def run(cfg: SimConfig) -> float:
    """Every strategy and seed; writes results, table and curve; returns the uncertainty ÷ random AUC ratio."""
    start = time.perf_counter()
    recipe = TrainConfig.from_dict(load_yaml(cfg.recipe))
    files = split_data(cfg)
    base = base_model(cfg, recipe)
    runs: dict[str, dict[int, list[dict]]] = {s: {} for s in cfg.strategies}
    todo = [(strategy, seed) for seed in cfg.seeds for strategy in cfg.strategies]
    if cfg.resume:
        for strategy, seed in list(todo):
            if (curve := recover(cfg, strategy, seed, files[1])) is not None:
                runs[strategy][seed] = curve
                todo.remove((strategy, seed))
                print(f"{strategy:<12} seed {seed}: recovered from its store", flush=True)
    with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(simulate, cfg, strategy, seed, files, base, recipe): (strategy, seed)
                   for strategy, seed in todo}
        for future in as_completed(futures):
            (strategy, seed), curve = futures[future], future.result()
            runs[strategy][seed] = curve
            print(f"{strategy:<12} seed {seed}: " + ", ".join(f"{m} {curve[-1][m]:.3f}" for m in METRICS)
                  + f" after {curve[-1]['decisions']} decisions ({time.perf_counter() - start:.0f} s)", flush=True)
    runs = {strategy: dict(sorted(by_seed.items())) for strategy, by_seed in runs.items()}
    summary = summarize(runs)
    ratio = auc_ratio(summary["uncertainty"]["auc"][0], summary["random"]["auc"][0]) \
        if {"uncertainty", "random"} <= summary.keys() else float("nan")
    seconds = time.perf_counter() - start
    table = markdown(cfg, summary, seconds, ratio)
    (cfg.out_dir / "results.json").write_text(json.dumps(
        {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
         "runs": runs, "summary": summary, "ratio": ratio, "seconds": seconds}, indent=1), encoding="utf-8")
    cfg.docs_dir.mkdir(parents=True, exist_ok=True)
    (cfg.docs_dir / "loop_simulation.md").write_text(table, encoding="utf-8")
    plot(summary, cfg.docs_dir / "loop_simulation.png")
    print(table)
    return ratio


def parse_args(argv: list[str] | None = None) -> SimConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=ROOT.parent / "shared" / "data" / "ucm")
    parser.add_argument("--out_dir", type=Path, help="stores, runs, results.json (default runs/loop_simulation)")
    parser.add_argument("--docs_dir", type=Path, help="table and PNG (default docs/, or OUT_DIR with --quick)")
    parser.add_argument("--triplets", default="triplets_train.json", help="seed-format file in DATA_DIR")
    parser.add_argument("--recipe", type=Path, default=ROOT / "configs" / "tiny_ucm.yaml")
    parser.add_argument("--strategies", nargs="+", default=list(SimConfig.strategies))
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--k", type=int, help="images per round")
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--max_images", type=int, help="use only this many images of the data set")
    parser.add_argument("--workers", type=int, help="simulations at once (default 2)")
    parser.add_argument("--resume", action="store_true", help="reuse the finished simulations of OUT_DIR")
    parser.add_argument("--quick", action="store_true", help="one seed, 2 rounds of 16 images, 160 images")
    args = parser.parse_args(argv)
    quick = {"seeds": (0,), "rounds": 2, "k": 16, "epochs": 2.0, "max_images": 160} if args.quick else {}
    given = {name: getattr(args, name) for name in ("seeds", "rounds", "k", "epochs", "max_images", "workers")
             if getattr(args, name) is not None}
    out_dir = args.out_dir or ROOT / "runs" / ("loop_simulation_quick" if args.quick else "loop_simulation")
    docs_dir = args.docs_dir or (out_dir if args.quick else ROOT / "docs")
    return SimConfig(data_dir=args.data_dir, out_dir=out_dir, docs_dir=docs_dir, recipe=args.recipe,
                     triplets=args.triplets, strategies=tuple(args.strategies), resume=args.resume,
        **{**quick, **{k: tuple(v) if k == "seeds" else v for k, v in given.items()}})


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # the training processes' bars (they inherit the environment)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("httpx", "loop", "curation", "scorer", "trainer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ratio = run(parse_args(argv))
    print(f"uncertainty_vs_random_auc={ratio:.4f}")


if __name__ == "__main__":
    main()
