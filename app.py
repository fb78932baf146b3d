"""``python app.py``: the Remote Scorer app in a browser — rank, annotate, search, retrain, promote.

``python app.py --demo`` starts offline with the tiny model and the demo scenes of ``assets/demo``
(imported into ``data/demo`` on first start) at http://127.0.0.1:7860.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEMO_IMAGES = ROOT / "assets" / "demo"
DEMO_DATA = ROOT / "data" / "demo"
DEMO_TRAIN_PIXELS = 64 * 64
DEMO_EPOCHS = 40.0  # the demo's first training run (bench: docs/loop_simulation.md has its held-out figure)

log = logging.getLogger("app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="backbone of a fresh scorer: tiny, a hub id or a path")
    parser.add_argument("--checkpoint", type=Path, help="scorer checkpoint to make the active model")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "app", help="store, caches, runs, exports")
    parser.add_argument("--image-root", type=Path, help="folder the image paths are relative to (served)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--auth", help="USER:PASS[:ROLE] required to open the app (role: annotator, reviewer, admin)")
    parser.add_argument("--auth-file", type=Path,
                        help="file with one USER:PASS[:ROLE] per line (no role: annotator; admin may import, train, "
                             "promote, roll back)")
    parser.add_argument("--max-file-size", default="200mb", help="largest upload (e.g. 200mb)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                        help="weights' precision (auto: bf16 on a bf16 GPU or a CPU with AMX/AVX512-BF16, else fp32)")
    parser.add_argument("--train-threads", type=int,
                        help="torch threads of a training run's process (default: every core but one)")
    parser.add_argument("--max-new-tokens", type=int,
                        help="length limit of a generated caption (default: scorer.generation's)")
    parser.add_argument("--demo", action="store_true", help="offline demo: tiny model, demo scenes, data/demo")
    parser.add_argument("--no-demo-training", action="store_true",
                        help="with --demo: no training run on first launch (nor the cached demo model)")
    args = parser.parse_args(argv)
    if args.demo:
        args.model, args.image_root = "tiny", args.image_root or DEMO_IMAGES
        if args.data_dir == ROOT / "data" / "app":
            args.data_dir = DEMO_DATA
    if args.image_root is None:
        parser.error("--image-root is required (or use --demo)")
    return args


def read_auth(args: argparse.Namespace):
    """The :class:`loop.access.Access` of --auth and --auth-file (``USER:PASS[:ROLE]`` a line; blank lines and
    # comments skipped; without a role a file line is an annotator, --auth the admin); errors name the source.
    None without either."""
    from loop.access import Access, parse_account

    lines = [("--auth", args.auth)] if args.auth else []
    if args.auth_file:
        if not args.auth_file.is_file():
            raise FileNotFoundError(f"--auth-file {args.auth_file} not found")
        text = args.auth_file.read_text(encoding="utf-8")
        lines += [(f"{args.auth_file}:{number}", line) for number, line in enumerate(text.splitlines(), 1)]
    accounts = [parse_account(line.strip(), source, "admin" if source == "--auth" else "annotator")
                for source, line in lines
                if line.strip() and not line.strip().startswith("#")]
    users = [account.user for account in accounts]
    if len(set(users)) != len(users):
        raise ValueError(f"auth: user {next(u for u in users if users.count(u) > 1)!r} is listed twice")
    return Access(accounts) if accounts else None


def app_config(args: argparse.Namespace):
    """The :class:`loop.AppConfig` of the command line (library defaults where an option is not given)."""
    from loop import AppConfig

    given = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens is not None else {}
    return AppConfig(data_dir=args.data_dir.resolve(), image_root=args.image_root.resolve(), model=args.model,
                     checkpoint=args.checkpoint, device=args.device, max_file_size=args.max_file_size,
                     dtype=args.dtype, train_threads=args.train_threads,
                     max_pixels=DEMO_TRAIN_PIXELS if args.demo else None, **given)


def make_services(args: argparse.Namespace, access=None):
    from loop import Services

    services = Services(app_config(args), access)
    if args.demo and not services.read_only:
        import_demo_if_empty(services)
        if not args.no_demo_training:
            start_demo_training(services)
    return services


def demo_form():
    """The demo's training run: the learning-check recipe (configs/tiny_ucm.yaml) at the demo's pixel budget."""
    from loop import TrainForm

    return TrainForm(loss="infonce+focal_triplet", epochs=DEMO_EPOCHS, lr=5e-4, lora_rank=0, batch_size=32,
                     max_pixels=DEMO_TRAIN_PIXELS, recipe={"freeze_token_embeddings": True, "head_lr": 2e-3,
                                                           "augment": True, "cache_images": True,
                                                           "max_text_tokens": 64, "save_every": 10_000})


def start_demo_training(services, form=None) -> int | None:
    """First launch: train on the demo scenes in the background (Train tab); later ones: the cached model."""
    from loop.demo import start_demo_learning

    return start_demo_learning(services, DEMO_IMAGES / "triplets.json", form or demo_form())


def import_demo_if_empty(services) -> None:
    from curation.importers import ImportOptions, import_file
    from curation.views import list_images

    conn = services.conn()
    if not list_images(conn):
        report = import_file(conn, "seed-triplets", DEMO_IMAGES / "triplets.json",
                             ImportOptions(image_root=services.image_root, check_files=True))
        log.info("demo set imported: %s", report.summary())


def launch(services, host: str = "127.0.0.1", port: int = 7860, auth=None, block: bool = True, quiet: bool = False):
    """Build and start the app; returns the Blocks (with ``block=False`` the server runs in a thread).

    ``auth`` (a :class:`loop.access.Access`, or None for the services' own) checks logins with its throttle;
    the client's address reaches it through :class:`loop.access.ClientAddressMiddleware`."""
    from starlette.middleware import Middleware

    from loop.access import ClientAddressMiddleware
    from ui.app import APP_JS, CSS, build_ui
    from ui.common import I18N

    if auth is not None:
        services.access = auth
    auth = services.access if services.access.enabled else None
    demo = build_ui(services)
    demo.queue(default_concurrency_limit=4)
    services.start_background()  # score the queue while the first annotators arrive (launch may block)
    demo.launch(server_name=host, server_port=port, auth=auth, prevent_thread_lock=not block, quiet=quiet,
                allowed_paths=[str(services.image_root), str(services.config.exports_dir)],
                max_file_size=services.config.max_file_size, i18n=I18N, js=APP_JS, css=CSS,
                footer_links=["api"], ssr_mode=False,
                app_kwargs={"middleware": [Middleware(ClientAddressMiddleware)]})
    return demo


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("REMOTE_SCORER_CACHE", str(ROOT / ".cache" / "remote_scorer"))
    args = parse_args(argv)
    try:
        auth = read_auth(args)  # a bad auth file fails before the model is loaded
        services = make_services(args, auth)
    except (ValueError, FileNotFoundError, PermissionError) as error:  # one clear line, no traceback
        raise SystemExit(f"app.py: {error}") from None
    mode = " READ-ONLY" if services.read_only else ""
    print(f"Remote Scorer{mode} on http://{args.host}:{args.port} (data {args.data_dir}, images {args.image_root})")
    try:
        launch(services, args.host, args.port, auth)
    finally:
        services.close()


if __name__ == "__main__":
    main()
