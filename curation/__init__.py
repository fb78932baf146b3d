"""Curation store: images, candidate captions and every human decision, in SQLite.

Nothing here imports torch or gradio: scores come in as plain floats. Every function takes a
connection from :func:`open_store` (one per thread) and writes in one ``BEGIN IMMEDIATE`` transaction.

Public API (``from curation.<module> import ...``)

store
    ``open_store(db_path) -> sqlite3.Connection`` — create / migrate (``PRAGMA user_version``), WAL,
    foreign keys, busy timeout. ``transaction(conn)`` context manager.
    ``add_image(conn, rel_path, image_root=None, sha256=None, width=None, height=None, cls=None,
    split=None, tags=None) -> int`` (idempotent on path; fills empty fields, never overwrites);
    ``add_caption(conn, image_id, text, source, author=None) -> int`` (idempotent on (image, text);
    source ``human`` for a caption a person adds); ``get_image(conn, image_id) -> Image``;
    ``find_image(conn, rel_path) -> int | None``.
decisions
    ``record_decision(conn, image_id, caption_id, verdict, annotator, model_version=None,
    score_shown=None) -> Decision`` (verdict accept / reject / best);
    ``edit_caption(conn, image_id, caption_id, new_text, annotator, makes_triplet=True) -> int``
    (new caption id); ``undo_last(conn, annotator) -> Decision | None`` (the action undone; up to the
    last 10, one by one; the undo is itself logged); ``history(conn, image_id) -> list[Decision]``.
triplets
    ``TripletFilter(human_only=False, annotator=None, source=None, since=None, until=None, split=None)``;
    ``list_triplets(conn, flt) -> list[Triplet]``; ``triplet_records(conn, flt) -> list[dict]`` in the
    README format (image_name, positive, negative, provenance) — what the trainer reads.
views
    ``image_captions(conn, image_id, model_version=None, include_hidden=False) -> list[CaptionRow]``
    (verdicts per annotator, score under that model or the queue's);
    ``list_images(conn, ImageFilter(cls, status, annotator, source, split, limit, offset, hidden)) ->
    list[ImageRow]``; ``to_frame(rows) -> DataFrame``; ``counters(conn, annotator) -> dict`` (done,
    total, mine, today).
queue
    ``QueueOptions(lease_seconds=900, class_balance=False, overlap_share=0.0)``;
    ``next_image(conn, annotator, options=None, exclude=()) -> int | None``;
    ``release_lease(conn, image_id, annotator) -> bool``;
    ``record_scores(conn, model_version, [(image_id, caption_id, score), ...]) -> int``.
models
    ``add_model_version(conn, path, metrics=None, parent=None, provenance=None) -> int``;
    ``set_active_model(conn, id)``; ``active_model(conn) -> ModelVersion | None``;
    ``list_model_versions(conn)``; ``add_training_run(conn, config) -> int``;
    ``update_training_run(conn, run_id, status, metrics=None, model_version=None)``;
    ``get_training_run``, ``list_training_runs``; ``generated_source(version) -> "model:v<id>"``.
stats
    ``stats(conn) -> dict`` — images, captions, decisions, triplets, per_annotator, disagreements,
    agreement (Cohen's κ with its item count); ``annotator_progress(conn) -> list[AnnotatorProgress]``,
    ``agreement_summary(conn) -> Agreement`` (pooled κ and ``PairAgreement`` per pair).
cleanup
    ``hide_image / unhide_image(conn, image_id, who, reason=None)``, ``hide_caption / unhide_caption(conn,
    caption_id, who, reason=None)`` -> ``VisibilityAction``; ``hidden_items(conn) -> list[HiddenItem]``;
    ``visibility_history(conn, item, item_id)``. Hidden items leave queue, views, exports and triplets.
review
    ``ReviewOptions(model_version, accepted_gap, rejected_margin, include_resolved, kinds)``;
    ``review_items(conn, options) -> list[ReviewItem]`` (captions side by side as ``ReviewCaption``);
    ``resolve(conn, image_id, caption_id, verdict, reviewer, note=None) -> Resolution`` (accept / reject /
    best / clear; triplets and best captions follow it; :mod:`curation.resolutions` reads them).
importers
    ``import_file(conn, kind, path, ImportOptions(image_root, source, check_files=True,
    image_template=None, ...), on_progress=None) -> ImportReport``; kinds ucm, karpathy, rsicap,
    seed-triplets, triplets, csv, jsonl. Rows are parsed and checked by ``common.formats`` (the
    trainer's rules); image files must exist and decode unless ``check_files=False``; one
    transaction per import (all or nothing); skipped rows are listed with row, field and reason.
exporters
    ``EXPORTS: {name: ExportKind(description, suffix, fn, uses_images)}``;
    ``export_file(conn, kind, out, TripletFilter, image_root=None) -> ExportReport``; kinds triplets,
    seed-triplets, best-captions(-csv, -parquet), decisions-csv, decisions-parquet, hf-dataset, hf-parquet;
    ``best_captions(conn, flt) -> list[BestCaption]``; ``build_dataset(conn, flt, image_root)``.

CLI: ``python -m curation --db PATH import KIND FILE [--image-root DIR] [--no-check-files]
[--image-template T] | export KIND OUT | stats [--json] | hide/unhide image PATH|--id N / caption ID --who NAME
| hidden | review | resolve IMAGE CAPTION VERDICT`` (``open_store(path, read_only=None)`` for stats/export:
read-only when the store cannot be written).
"""
