"""``python -m scorer.generation``: write candidate captions of images as JSON Lines for the store.

    python -m scorer.generation --model tiny --images imgs/ --image-root . --n 5 --output candidates.jsonl
    OPENAI_BASE_URL=http://localhost:8000/v1 python -m scorer.generation --generator openai \\
        --openai-model Qwen/Qwen2.5-VL-7B-Instruct --images imgs/ --n 5 --output candidates.jsonl
    python -m scorer.generation --hard-negatives --captions best.json --n 3 --output negatives.jsonl

Each line is ``{"image", "caption", "source": "model:<name>", "generator": "local:<model>"|"openai:<model>"}``
(``docs/formats.md``), which ``python -m curation --db DB import jsonl F.jsonl`` takes. Lines are flushed after each
chunk of images, and ``--append`` resumes an interrupted run, skipping images already in the file.

``--hard-negatives`` edits 2–3 details of each caption of ``--captions`` (JSON Lines or a JSON array of
``{"image", "caption", ...}`` such as the store's ``best-captions`` export, CSV with ``image,caption`` columns,
or text lines ``image<TAB>caption``): the rule editor alone, or with ``--model`` / ``--generator openai`` an LLM
whose proposals are validated first. Each line is a candidate ``{"image", "caption", "source":
"hard-negative:<edit kinds>", "generator": "rule"|"llm:<name>", "negative_of": <the source caption>}``.
The library API is :mod:`scorer.generation`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from common.paths import relative_to_root
from scorer.generation import (
    LANGUAGES,
    STYLES,
    CaptionGenerator,
    GenerationSettings,
    GeneratorError,
    HardNegative,
    LocalQwenGenerator,
    OpenAICompatibleGenerator,
    ProgressCallback,
    generate_hard_negatives,
)
from scorer.qwen2_5_vl.backbone import DTYPE_CHOICES

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
NEGATIVE_SOURCE = "hard-negative"


def find_images(path: str | os.PathLike[str]) -> list[Path]:
    """A folder → its image files (recursively, sorted); an image file → itself."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"--images {root}: no such file or folder")
    images = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"--images {root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in it")
    return images


def image_field(path: Path, image_root: str | os.PathLike[str] | None) -> str:
    """The path as the store wants it: relative to ``image_root`` (POSIX), else as given."""
    return relative_to_root(image_root, path) if image_root is not None else path.as_posix()


def model_label(model: str) -> str:
    """``tiny`` / a hub id stay as they are; a local folder is named by its last part."""
    return Path(model).resolve().name if Path(model).exists() else model


def drop_partial_last_line(output: Path) -> None:
    """A run killed mid-write leaves a last line without its newline: cut it, so ``--append`` resumes."""
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        logger.warning("%s: dropping an incomplete last line (%d bytes) left by an interrupted run",
                       output, len(data) - keep)
        with open(output, "r+b") as handle:
            handle.truncate(keep)


def done_images(output: Path) -> set[str]:
    """Images that already have lines in ``output`` (for ``--append``)."""
    done = set()
    with open(output, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    done.add(json.loads(line)["image"])
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise ValueError(f"{output} line {number}: not a candidate caption line ({err!r})") from err
    return done


def pending_images(images: Sequence[Path], output: str | os.PathLike[str],
                   image_root: str | os.PathLike[str] | None = None, append: bool = False) -> dict[Path, str]:
    """The images still to caption, each with its ``image`` field; checked before any model is loaded.

    ``FileExistsError`` if ``output`` exists and ``append`` is off; ``PathOutsideRootError`` naming an
    image outside ``image_root``. With ``append``, images that already have lines are left out.
    """
    output = Path(output)
    if output.exists() and not append:
        raise FileExistsError(f"{output} exists; pass --append to add to it (resuming) or choose another file")
    fields = {path: image_field(path, image_root) for path in images}
    if output.exists():
        drop_partial_last_line(output)
    done = done_images(output) if output.exists() else set()
    return {path: field for path, field in fields.items() if field not in done}


def caption_source(generator: CaptionGenerator) -> str:
    """The store's ``source`` of a generated caption: ``model:<model name>``."""
    return f"model:{generator.model_name}"


def candidate_lines(generator: CaptionGenerator, image_fields: Sequence[str],
                    captions: Sequence[Sequence[str]]) -> list[dict]:
    """The store's candidate records (docs/formats.md) for each image's generated captions."""
    source = caption_source(generator)
    return [{"image": field, "caption": text, "source": source, "generator": generator.name}
            for field, texts in zip(image_fields, captions) for text in texts]


def negative_source(negative: HardNegative) -> str:
    """The store's ``source`` of a hard negative: ``hard-negative:<its edit kinds, joined by +>``."""
    return f"{NEGATIVE_SOURCE}:{'+'.join(negative.edit_kinds)}"


def read_captions(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Distinct (image, caption) pairs of a captions file, in order (see the module docstring for formats).

    A record without a non-empty ``image`` or ``caption`` string is a ``ValueError`` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--captions {path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        rows = [(reader.line_num, row) for row in reader]
    elif path.suffix.lower() == ".txt":
        rows = [(number, dict(zip(("image", "caption"), line.split("\t", 1))))
                for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    elif text.lstrip().startswith("["):
        rows = list(enumerate(json.loads(text), 1))
    else:
        rows = [(number, _json_line(path, number, line)) for number, line in enumerate(text.splitlines(), 1)
                if line.strip()]
    pairs: dict[tuple[str, str], None] = {}
    for number, row in rows:
        image, caption = (row.get(key) if isinstance(row, dict) else None for key in ("image", "caption"))
        for name, value in (("image", image), ("caption", caption)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{path} record {number}: no {name!r} text")
        pairs[(image.strip(), caption.strip())] = None
    return list(pairs)


def _json_line(path: Path, number: int, line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} line {number}: not JSON ({err})") from err


def write_hard_negatives(pairs: Sequence[tuple[str, str]], output: str | os.PathLike[str], n: int,
                         generator: CaptionGenerator | None = None, seed: int = 0,
                         on_progress: ProgressCallback | None = None) -> int:
    """``n`` hard negatives of each (image, caption) as candidate lines of the same image; → lines written.

    ``output`` must not exist; lines are flushed caption by caption.
    """
    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output} exists; choose another file")
    written = 0
    with open(output, "w", encoding="utf-8") as handle:
        for number, (image, caption) in enumerate(pairs):
            negatives = generate_hard_negatives(caption, n, generator=generator, seed=seed + number)
            handle.writelines(json.dumps({"image": image, "caption": negative.text, "source": negative_source(negative),
                                          "generator": negative.method, "negative_of": caption},
                                         ensure_ascii=False) + "\n" for negative in negatives)
            handle.flush()
            written += len(negatives)
            if on_progress is not None:
                on_progress(number + 1, len(pairs))
    logger.info("wrote %d hard negatives of %d captions to %s", written, len(pairs), output)
    return written


def write_candidates(generator: CaptionGenerator, pending: dict[Path, str], output: str | os.PathLike[str],
                     n: int, style: str = "detailed", language: str = "en", chunk: int = 16,
                     on_progress: ProgressCallback | None = None) -> int:
    """Generate ``n`` captions per pending image and append them as JSON Lines, a chunk at a time.

    ``pending`` maps image files to their ``image`` field (:func:`pending_images`). → lines written.
    """
    todo = list(pending)
    written = 0
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        progress = None if on_progress is None else (
            lambda done, _total, start=start: on_progress(start + done, len(todo)))
        captions = generator.generate_captions([str(p) for p in part], n, style, language, progress)
        lines = candidate_lines(generator, [pending[path] for path in part], captions)
        with open(output, "a", encoding="utf-8") as handle:  # opened per chunk: a failed first chunk leaves no file
            handle.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        written += len(lines)
    logger.info("wrote %d captions of %d images to %s", written, len(todo), output)
    return written


def load_local_generator(model: str, settings: GenerationSettings, device: str | None = None,
                         dtype: str | None = None) -> LocalQwenGenerator:
    """A scorer checkpoint (its LoRA is disabled while writing), a backbone path, a hub id or ``tiny``."""
    from scorer.checkpoint import is_checkpoint, load_checkpoint, new_scorer

    if is_checkpoint(model):
        scorer_model, processor = load_checkpoint(model, device=device, dtype=dtype)
    else:
        scorer_model, processor = new_scorer(model, device=device, dtype=dtype)
    return LocalQwenGenerator(scorer_model, processor, settings, model_name=model_label(model))


def build_generator(args: argparse.Namespace) -> CaptionGenerator:
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        batch_size=args.batch_size, seed=args.seed)
    if args.generator == "openai":
        model = args.openai_model or os.environ.get("OPENAI_MODEL")
        return OpenAICompatibleGenerator.from_env(model or "", args.openai_base_url, args.openai_api_key,
                                                  settings=settings, timeout=args.timeout, retries=args.retries)
    if not args.model:
        raise ValueError("--model is required with --generator local (tiny, a scorer checkpoint or a backbone)")
    return load_local_generator(args.model, settings, args.device, args.dtype)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", help="an image file, or a folder searched recursively")
    parser.add_argument("--hard-negatives", action="store_true",
                        help="write hard negatives of the captions of --captions instead of captions of images")
    parser.add_argument("--captions", help="--hard-negatives: JSONL / JSON / CSV with image and caption, or "
                                           "image<TAB>caption lines (e.g. `python -m curation export best-captions`)")
    parser.add_argument("--output", required=True, help="JSON Lines file to write")
    parser.add_argument("--n", type=int, default=5, help="captions per image (hard negatives per caption)")
    parser.add_argument("--generator", choices=("local", "openai"), default="local")
    parser.add_argument("--model", help="local generator: tiny, a scorer checkpoint, a backbone path or hub id")
    parser.add_argument("--image-root", help="write image paths relative to this folder (as the store wants)")
    parser.add_argument("--style", choices=STYLES, default="detailed")
    parser.add_argument("--language", choices=LANGUAGES, default="en", help="language of the prompts")
    parser.add_argument("--append", action="store_true", help="add to --output, skipping images it has")
    decoding = parser.add_argument_group("decoding")
    decoding.add_argument("--max-new-tokens", type=int, default=GenerationSettings.max_new_tokens,
                          help="bound on a caption's tokens; each stops earlier at its end-of-sequence")
    decoding.add_argument("--temperature", type=float, default=0.9)
    decoding.add_argument("--top-p", type=float, default=0.95)
    decoding.add_argument("--top-k", type=int, default=50)
    decoding.add_argument("--batch-size", type=int, default=4, help="images per generate call (local)")
    decoding.add_argument("--seed", type=int, default=None)
    decoding.add_argument("--device", default=None, help="local: cuda / cpu (default: cuda if available)")
    decoding.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                          help="local: weights' precision; auto = bf16 on a GPU or CPU with native bf16, else fp32")
    endpoint = parser.add_argument_group("OpenAI-compatible endpoint")
    endpoint.add_argument("--openai-base-url", help="e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL)")
    endpoint.add_argument("--openai-model", help="model name the endpoint serves (default: $OPENAI_MODEL)")
    endpoint.add_argument("--openai-api-key", help="default: $OPENAI_API_KEY (vLLM and Ollama need none)")
    endpoint.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    endpoint.add_argument("--retries", type=int, default=3, help="retries on connection errors, 429 and 5xx")
    args = parser.parse_args(argv)
    if args.hard_negatives and (args.captions is None or args.images or args.append):
        parser.error("--hard-negatives takes --captions FILE (not --images or --append)")
    if not args.hard_negatives and (args.images is None or args.captions):
        parser.error("--images is required (--captions goes with --hard-negatives)")
    return args


def hard_negatives_main(args: argparse.Namespace) -> int:
    """``--hard-negatives``: the rule editor, or an LLM's validated proposals first with --model / openai."""
    from tqdm import tqdm

    pairs = read_captions(args.captions)
    generator = build_generator(args) if args.model or args.generator == "openai" else None
    with tqdm(total=len(pairs), unit="caption", desc="hard negatives") as bar:
        written = write_hard_negatives(pairs, args.output, args.n, generator, seed=args.seed or 0,
                                       on_progress=lambda done, _total: bar.update(done - bar.n))
    print(f"wrote {written} hard negatives of {len(pairs)} captions to {args.output} "
          f"({generator.name if generator else 'rules'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        if args.hard_negatives:
            return hard_negatives_main(args)
        images = find_images(args.images)
        pending = pending_images(images, args.output, args.image_root, args.append)
        if len(pending) < len(images):
            print(f"{len(images) - len(pending)} of {len(images)} images already in {args.output}; skipping them")
        generator = build_generator(args)
        with tqdm(total=len(pending), unit="image", desc="generating") as bar:
            def progress(done: int, _total: int) -> None:
                bar.update(done - bar.n)

            written = write_candidates(generator, pending, args.output, args.n, args.style, args.language,
                                       on_progress=progress)
    except (GeneratorError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {written} candidate captions to {args.output} ({generator.name})")
    return 0

