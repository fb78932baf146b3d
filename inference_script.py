"""Score or rank captions of remote-sensing images with a trained scorer checkpoint.

Modes (flags kept from the original Remote_Scorer project, plus ranking):

  python inference_script.py --checkpoint DIR --image_path P --text T
  python inference_script.py --checkpoint DIR --json_input pairs.json [--json_output out.json]
      pairs.json: [{"image_path": ..., "text": ...}, ...] → the same records + "similarity_score"
  python inference_script.py --checkpoint DIR --rank --json_input items.json [--json_output out.json]
      items.json: [{"image": ..., "captions": [...]}, ...] → each image's captions sorted by score + "best"
  python inference_script.py --checkpoint DIR --rank --input corpus.jsonl|.parquet --output_dir shards/
  python inference_script.py --checkpoint DIR --embed image|text --input corpus.jsonl --output_dir emb/
      corpus jobs (scorer/corpus.py): the input is streamed, results go to shards/shard-00000.parquet ...,
      a killed job run again resumes after the last finished shard; memory stays flat

``similarity_score`` is the cosine similarity in [-1, 1]. The original project reported (cos + 1) / 2
in [0, 1]; convert with ``(score + 1) / 2`` to compare with its numbers.

Corpora too large for one device: ``accelerate launch --multi_gpu --num_processes N inference_script.py ...``
splits the records across processes (and machines); the main process writes results in input order.
On CPU processes: ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ...`` (accelerate's
``--cpu --num_processes 2`` alone starts a single process unless MPI is configured).
A missing or unreadable image, or a malformed record, stops with a message naming the file and the
record index, and exit status 2 — never a silent score of 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from common.files import atomic_output
from common.inputs import InputRecordError, existing_image, text_field

EXIT_BAD_INPUT = 2


InputError = InputRecordError  # bad input named precisely (file, record index, field)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Score remote-sensing image captions with a scorer checkpoint")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="scorer checkpoint directory (or an original Remote_Scorer one)")
    source.add_argument("--model", help="untrained scorer on a backbone: hub id, local path or 'tiny'")
    parser.add_argument("--image_path", help="one image to score against --text")
    parser.add_argument("--text", help="the caption to score with --image_path")
    parser.add_argument("--json_input", help="JSON file of records (pairs, or with --rank images with captions)")
    parser.add_argument("--json_output", help="write results here (default: print them)")
    parser.add_argument("--rank", action="store_true", help="rank each image's captions ({image, captions})")
    parser.add_argument("--input", help="corpus job: JSONL or Parquet input, streamed (with --rank or --embed)")
    parser.add_argument("--output_dir", help="corpus job: folder of the Parquet shards (resumes what is there)")
    parser.add_argument("--embed", choices=["image", "text"], help="corpus job: embed each record's image or caption")
    parser.add_argument("--shard_size", type=int, default=1000, help="corpus job: records per output shard")
    parser.add_argument("--max_shards", type=int, help="corpus job: stop after this many new shards (resume later)")
    parser.add_argument("--image_root", help="resolve image paths inside this directory (and never outside it)")
    parser.add_argument("--batch_size", type=int, default=16, help="images or captions per forward pass")
    parser.add_argument("--cache_dir", help="on-disk embedding cache shared between runs")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: accelerate's choice)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                        help="weights' precision (auto: bf16 on a bf16 GPU or a CPU with AMX/AVX512-BF16)")
    args = parser.parse_args(argv)
    single = args.image_path is not None or args.text is not None
    if single and (args.image_path is None or args.text is None):
        parser.error("--image_path and --text go together")
    if args.input is not None:
        if single or args.json_input or not args.output_dir or args.rank == (args.embed is not None):
            parser.error("a corpus job is --input with --output_dir and one of --rank / --embed")
        return args
    if single == (args.json_input is not None):
        parser.error("give either --image_path with --text, --json_input, or --input (corpus job)")
    if (args.rank and not args.json_input) or args.embed:
        parser.error("--rank needs --json_input or --input; --embed needs --input")
    return args


def read_records(path: str, rank: bool, image_root: str | None) -> list[dict]:
    """Load and validate every record up front; the error names the file, record index and field."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"input file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    records = []
    for index, record in enumerate(data):
        where = f"{path}: record {index}"
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected an object, got {type(record).__name__}")
        if rank:
            captions = record.get("captions")
            if not isinstance(captions, list) or not captions:
                raise InputError(f"{where}: field 'captions' must be a non-empty list of strings")
            for n, caption in enumerate(captions):
                text_field({"caption": caption}, "caption", f"{where}, caption {n}")
            image = text_field(record, "image", where)
        else:
            text_field(record, "text", where)
            image = text_field(record, "image_path", where)
        records.append({**record, "_resolved": existing_image(image, image_root, where), "_index": index})
    return records


def load_scorer(args: argparse.Namespace, device):
    from scorer import Scorer
    from scorer.ranking import EmbeddingCache

    if args.checkpoint:
        return Scorer.from_checkpoint(args.checkpoint, device=device, batch_size=args.batch_size,
                                      cache_dir=args.cache_dir, dtype=args.dtype)
    from scorer import new_scorer

    logging.warning("no --checkpoint: scoring with UNTRAINED heads on %s (for plumbing checks only)", args.model)
    model, processor = new_scorer(args.model, device=device, dtype=args.dtype)
    return Scorer(model, processor, f"untrained-{args.model}", args.batch_size, EmbeddingCache(args.cache_dir))


def score_records(scorer, records: list[dict], rank: bool, progress=None) -> list[dict]:
    """Score (or rank) this process's records; each image and caption is encoded once."""
    if rank:
        ranked = scorer.rank([(r["_resolved"], r["captions"]) for r in records], on_progress=progress)
        return [_ranked_record(r, result) for r, result in zip(records, ranked)]
    scores = scorer.score_pairs([(r["_resolved"], r["text"]) for r in records], on_progress=progress)
    return [{**_public(r), "similarity_score": score} for r, score in zip(records, scores)]


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _ranked_record(record: dict, ranked) -> dict:
    captions = [{"text": c.text, "score": c.score} for c in ranked.captions]
    return {**_public(record), "captions": captions, "best": captions[0], "margin": ranked.margin}


def score_my_share(args: argparse.Namespace, accelerator, mine: list[dict]) -> tuple[list, str | None]:
    """This process's (index, result) pairs, or the error that stopped it (reported by every process)."""
    from tqdm.auto import tqdm

    from scorer import ImageLoadError

    try:
        scorer = load_scorer(args, args.device or accelerator.device)
        with tqdm(desc=f"encoding (process {accelerator.process_index})", unit="item", leave=False,
                  disable=not mine) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            results = score_records(scorer, mine, args.rank, progress)
    except ImageLoadError as err:  # the file the scorer could not read → the first record that names it
        index = next((r["_index"] for r in mine if r["_resolved"] == err.path), "?")
        return [], f"record {index}: {err}"
    logging.info("process %d/%d scored %d records", accelerator.process_index, accelerator.num_processes, len(mine))
    return list(zip([r["_index"] for r in mine], results)), None


CORPUS_MEMORY_ITEMS = 10_000  # embeddings a corpus job keeps in memory: a constant, so memory stays flat


def run_corpus(args: argparse.Namespace) -> int:
    """A streaming corpus job (scorer/corpus.py): this process's shards, then ``_done.json`` on the main one."""
    from accelerate import PartialState

    from scorer.corpus import CorpusJob, finish, run_job

    state = PartialState(cpu=args.device == "cpu")
    try:
        job = CorpusJob(Path(args.input), Path(args.output_dir), "rank" if args.rank else f"embed-{args.embed}",
                        args.shard_size, Path(args.image_root) if args.image_root else None, args.max_shards)
        scorer = load_scorer(args, args.device or state.device)
        scorer.cache.max_memory_items = CORPUS_MEMORY_ITEMS
        report = run_job(job, scorer, state.process_index, state.num_processes)
    except (ValueError, FileNotFoundError) as err:  # CorpusInputError names the file, record and field
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT  # a launcher stops the other processes when one exits non-zero
    logging.info("process %d/%d wrote %d shards (%d records) in %.2f s, %d already done", state.process_index,
                 state.num_processes, report.shards_written, report.records, report.seconds, report.shards_skipped)
    state.wait_for_everyone()
    if state.is_main_process:
        done = finish(job, report)
        print(f"{job.output_dir}: {'complete' if done else 'partial (run again to resume)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.input:
        return run_corpus(args)
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    try:
        if args.json_input:
            records = read_records(args.json_input, args.rank, args.image_root)
        else:
            where = "--image_path"
            records = [{"image_path": args.image_path, "text": args.text, "_index": 0,
                        "_resolved": existing_image(args.image_path, args.image_root, where)}]
    except InputError as err:  # every process read the same input: every process stops here
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    accelerator = Accelerator(cpu=args.device == "cpu")
    with accelerator.split_between_processes(records) as mine:
        results, error = score_my_share(args, accelerator, mine)
    # Collective: every process takes part, so one process's bad image cannot leave the others waiting.
    gathered = gather_object([(error, results)])
    errors = [error for error, _ in gathered if error]
    if errors:
        if accelerator.is_main_process:
            print(f"error: {errors[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not accelerator.is_main_process:
        return 0
    ordered = [result for _, part in gathered for result in part]
    ordered = [result for _, result in sorted(ordered, key=lambda pair: pair[0])]
    if not args.json_input:
        print(f"image: {args.image_path}\ntext: {args.text}\nsimilarity_score: {ordered[0]['similarity_score']:.4f}")
    elif args.json_output:
        with atomic_output(Path(args.json_output)) as handle:  # an interrupted run never leaves half a file
            handle.write(json.dumps(ordered, ensure_ascii=False, indent=2))
        print(f"wrote {len(ordered)} results to {args.json_output}")
    else:
        print(json.dumps(ordered, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
