"""``python -m scorer.generation``: write candidate captions of images as JSON Lines for the store.

    python -m scorer.generation --model tiny --images imgs/ --image-root . --n 5 --output candidates.jsonl
    OPENAI_BASE_URL=http://localhost:8000/v1 python -m scorer.generation --generator openai \\
        --openai-model Qwen/Qwen2.5-VL-7B-Instruct --images imgs/ --n 5 --output candidates.jsonl

Each line is ``{"image", "caption", "source": "model:<name>", "generator": "local:<model>"|"openai:<model>"}``
(``docs/formats.md``), which ``python -m curation --db DB import jsonl F.jsonl`` takes. Lines are flushed after each
chunk of images, and ``--append`` resumes an interrupted run, skipping images already in the file.
The library API is :mod:`scorer.generation`.
"""

from __future__ import annotations

import argparse
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
    LocalQwenGenerator,
    OpenAICompatibleGenerator,
    ProgressCallback,
)
from scorer.qwen2_5_vl.backbone import DTYPE_CHOICES

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


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
    parser.add_argument("--images", required=True, help="an image file, or a folder searched recursively")
    parser.add_argument("--output", required=True, help="JSON Lines file to write")
    parser.add_argument("--n", type=int, default=5, help="captions per image")
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
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

