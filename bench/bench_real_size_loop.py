"""The curation loop at real size on one machine: start, import, rank, train, promote, rank again.

    python bench/bench_real_size_loop.py --dtype auto

Drives the app's own code paths without a browser (``loop.Services``, the Annotate tab's ranked view, the
Train machinery, promotion) on a Qwen2.5-VL-3B with RANDOM weights (speed and memory do not depend on the
weights). The model folder is built once from ``--reference``'s config.json with transformers' own
initialisation (the tiny backbone's processor files) and cached under ``$REMOTE_SCORER_REAL_CACHE`` (default
``~/.cache/remote_scorer_real``), outside the repository. Prints each step's time and the peak resident memory
of this process and its children together (psutil, every 0.2 s); the last line is
``real_size_loop_peak_gib=<n>``. It needs ~10–18 GB free: check ``free -g`` first on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))



def shared(*parts: str) -> Path:
    """``shared/...`` beside the checkout or beside a folder above it (worktrees sit one level deeper)."""
    for folder in ROOT.parents:
        if (folder / "shared").is_dir():
            return folder.joinpath("shared", *parts)
    return ROOT.parent.joinpath("shared", *parts)


DEFAULT_REFERENCE = shared("reference", "qwen2.5-vl-3b-instruct")
DEFAULT_UCM = shared("data", "ucm")
GIB = 1024**3
LIMIT_GIB = 20.0

log = logging.getLogger("bench_real_size_loop")


def real_cache() -> Path:
    return Path(os.environ.get("REMOTE_SCORER_REAL_CACHE", Path.home() / ".cache" / "remote_scorer_real"))


def ensure_random_model(reference: Path, out: Path) -> Path:
    """The random-weight model folder of ``reference``'s size in bf16 (built once, reused when present)."""
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from scorer.qwen2_5_vl.backbone import resolve_backbone_path

    if not (reference / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {reference} (the reference Qwen2.5-VL-3B folder)")
    log.info("building the random-weight model of %s in %s (once)", reference, out)
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration._from_config(Qwen2_5_VLConfig.from_pretrained(reference),
                                                             dtype=torch.bfloat16)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=out.parent if out.parent.is_dir() else None))
    model.save_pretrained(staging, safe_serialization=True)
    AutoProcessor.from_pretrained(resolve_backbone_path("tiny")).save_pretrained(staging)
    del model
    out.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(out)
    return out


def proportional_set_size(pid: int) -> int:
    """PSS of a process in bytes (/proc/PID/smaps_rollup; 0 where the kernel has none)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        return 0
    return 0


class PeakMemory:
    """Peak resident memory of this process and all its children together, sampled every ``every`` s.

    On a shared machine it also guards the others: when the machine's available memory falls below
    ``min_free`` bytes, it kills this process tree (children first) and says so, rather than let the kernel's
    OOM killer choose someone else's process.
    """

    def __init__(self, every: float = 0.2, min_free: int = 0):
        self.every, self.peak, self.peak_pss, self.min_free = every, 0, 0, min_free
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        """The tree's resident memory: the sum of RSS (pages two processes map, e.g. the same memory-mapped
        weights, counted twice: an upper bound); the sum of PSS (each shared page split between its users:
        the tree's footprint) is kept in ``peak_pss``."""
        me = psutil.Process()
        total = pss = 0
        for process in [me, *me.children(recursive=True)]:
            try:
                total += process.memory_info().rss
                pss += proportional_set_size(process.pid)
            except (psutil.Error, OSError):  # a child that just ended
                pass
        self.peak_pss = max(self.peak_pss, pss)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.sample())
            if self.min_free and psutil.virtual_memory().available < self.min_free:
                print(f"ABORTED: the machine's available memory fell below {self.min_free / GIB:.1f} GiB "
                      f"(this run's peak so far {self.peak / GIB:.2f} GiB); stopping to protect other jobs", flush=True)
                for child in psutil.Process().children(recursive=True):
                    child.kill()
                os._exit(3)

    def __enter__(self) -> PeakMemory:
        self.peak = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def ucm_subset(ucm: Path, n: int, out: Path) -> Path:
    records = json.loads((ucm / "triplets_train.json").read_text(encoding="utf-8"))[:n]
    out.write_text(json.dumps(records), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--model-dir", type=Path, default=None, help="the random model folder (built when missing)")
    parser.add_argument("--ucm", type=Path, default=DEFAULT_UCM)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-held-out", type=int, default=8)
    parser.add_argument("--work", type=Path, default=None, help="app data folder (default: a temporary one)")
    parser.add_argument("--min-free-gib", type=float, default=1.5,
                        help="abort when the machine's available memory falls below this (a shared machine)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = ensure_random_model(args.reference, args.model_dir or real_cache() / "qwen2.5-vl-3b-random-bf16")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-real-loop-"))
    times: dict[str, float] = {}
    with PeakMemory(min_free=int(args.min_free_gib * GIB)) as memory:
        failed = run_loop(args, model_dir, work, times, memory)
    for name, seconds in times.items():
        print(f"{name:<34} {seconds:8.1f} s")
    peak = memory.peak / GIB
    print(f"peak of the tree: {peak:.2f} GiB as the sum of RSS (shared memory-mapped weights counted in each "
          f"process), {memory.peak_pss / GIB:.2f} GiB as the sum of PSS (each page once)")
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / GIB:.0f} GiB; dtype {args.dtype}; "
          f"model {model_dir}")
    if failed or peak > LIMIT_GIB:
        print(f"FAILED: {failed or f'peak {peak:.2f} GiB above {LIMIT_GIB} GiB'}")
    print(f"real_size_loop_peak_gib={peak:.2f}")
    return 1 if failed or peak > LIMIT_GIB else 0


def run_loop(args, model_dir: Path, work: Path, times: dict, memory: PeakMemory) -> str | None:
    """Each step of the loop, timed; returns why a step failed (None when all succeeded)."""
    from curation.importers import ImportOptions, import_file
    from curation.queue import next_image
    from loop import AppConfig, Services, TrainForm
    from ui.annotate import ranked_captions

    def step(name: str, fn):
        start = time.perf_counter()
        result = fn()
        times[name] = time.perf_counter() - start
        print(f"{name}: {times[name]:.1f} s, peak so far {memory.peak / GIB:.2f} GiB", flush=True)
        return result

    services = step("start (load the scorer)", lambda: Services(AppConfig(
        data_dir=work / "data", image_root=args.ucm, model=str(model_dir), dtype=args.dtype)))
    try:
        subset = ucm_subset(args.ucm, args.images, work / "subset.json")
        report = step(f"import {args.images} UCM images", lambda: import_file(
            services.conn(), "seed-triplets", subset, ImportOptions(image_root=services.image_root, check_files=True)))
        log.info("import: %s", report.summary())
        services.start_background()
        first = next_image(services.conn(), "bench")
        ranked = step("first ranked view", lambda: ranked_captions(services, first))
        log.info("first view: image %d, %d captions, best %.4f", first, len(ranked), ranked[0][1])
        step("queue scorer: the other images", lambda: services.queue_scorer.wait(1800))
        form = TrainForm(max_steps=1, batch_size=args.batch_size, gradient_checkpointing=True, evaluations=1,
                         max_held_out=args.max_held_out, auto_promote=False)
        run_id = services.training.start(form)
        snapshot = step("1-step LoRA run with held-out evaluation", lambda: wait_run(services, run_id))
        if snapshot.status != "done":
            return f"training run {run_id} {snapshot.status}: {snapshot.result.get('error', '')[-2000:]}"
        log.info("held-out evaluation: %s", snapshot.result["evaluation"])
        model_id = step("promotion (release old, load new)", lambda: services.training.promote(run_id))
        second = next_image(services.conn(), "bench-2") or first
        ranked = step("next ranked view, new model", lambda: ranked_captions(services, second))
        if services.scorer()[1] != model_id or not ranked or ranked[0][1] != ranked[0][1]:
            return "the next ranked view was not scored by the promoted model"
    finally:
        if not services.queue_scorer.stop(timeout=1800):  # its chunk in progress ends first (minutes at 3B)
            log.warning("the queue scorer is still scoring")
        services.close()
    return None


def wait_run(services, run_id: int):
    while True:
        snapshot = services.training.snapshot(run_id)
        if snapshot.status != "running":
            return snapshot
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
