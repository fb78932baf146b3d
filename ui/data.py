"""Data tab: import with the store's importers (a file on the server or an upload) and export every format."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr
import pandas as pd

from common.paths import resolve_inside
from curation.exporters import EXPORTS, export_file
from curation.importers import IMPORTERS, ImportOptions, import_file
from curation.triplets import TripletFilter
from loop import SCOPES, GenerateForm, Services
from scorer.generation import LANGUAGES, STYLES
from ui.common import headers, localized, require, say, tr, user_errors

FILE_EXPORTS = list(EXPORTS)  # every kind; a folder (the Hugging Face dataset) is downloaded as a .zip
POLL_SECONDS = 1.0
SHOWN_SKIPPED = 5  # unreadable images the generation status names (the log has them all)


def import_data(services: Services, kind: str, server_path: str | None, upload: str | None,
                progress=None, check_files: bool = True) -> tuple[str, pd.DataFrame]:
    """Import an uploaded file, or a file named relative to the image root; return the summary and skipped rows.

    ``check_files`` False stores rows whose image is missing or does not decode (a store built before the files
    arrive)."""
    require(services, "import")
    if upload:
        path = Path(upload)
    elif server_path and server_path.strip():
        path = resolve_inside(services.image_root, server_path.strip())
    else:
        raise ValueError(say("err_import_source"))
    options = ImportOptions(image_root=services.image_root, check_files=bool(check_files))
    report = import_file(services.conn(), kind, path, options, progress)
    services.queue_scorer.start()  # new captions: score them for the queue
    skipped = pd.DataFrame([[s.row, s.reason] for s in report.skipped], columns=headers("row", "reason"))
    return report.summary(), skipped


def export_data(services: Services, kind: str, human_only: bool) -> tuple[str, str]:
    """Write ``kind`` under the app's exports folder; return the file (for download) and a summary."""
    if kind not in FILE_EXPORTS:
        raise ValueError(f"unknown export kind {kind!r}; choose one of {', '.join(FILE_EXPORTS)}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    out = services.config.exports_dir / f"{kind}-{stamp}{EXPORTS[kind].suffix}"
    root = services.image_root if EXPORTS[kind].uses_images else None  # the images as the app serves them
    report = export_file(services.conn(), kind, out, TripletFilter(human_only=bool(human_only)), image_root=root)
    if EXPORTS[kind].folder:  # one file to download: the folder zipped (datasets.load_from_disk on the unzipped)
        out = Path(shutil.make_archive(str(out), "zip", root_dir=out.parent, base_dir=out.name))
    return str(out), say("export_summary", kind=report.kind, records=report.records, file=out.name)



def start_generation(services: Services, scope: str, n: float, style: str, language: str) -> str:
    """Start the batch generation job in the background; return a status line."""
    require(services, "generate_batch")
    form = GenerateForm(n=int(n or 0), scope=scope, style=style, language=language,
                        max_new_tokens=services.config.max_new_tokens)
    job_id = services.generation.start(form)
    return say("generation_started", job=job_id)


def generation_status(services: Services) -> tuple[float, str]:
    """(percent, status line) of the latest generation job."""
    job = services.generation.snapshot()
    if job is None:
        return 0.0, say("no_generation_job")
    return generation_line(job)


def generation_running(services: Services) -> bool:
    job = services.generation.snapshot()
    return job is not None and job.status in ("running", "importing")


def generation_line(job) -> tuple[float, str]:
    percent = 100.0 if job.status == "done" else round(100 * job.done / max(job.total, 1), 1)
    line = say("generation_status", job=job.job_id, status=say(f"status_{job.status}"), done=job.done,
               total=job.total, elapsed=job.elapsed)
    if job.summary:
        line += say("generation_imported", summary=job.summary)
    if job.skipped:
        files = "; ".join(f"`{path}` ({why})" for path, why in list(job.skipped.items())[:SHOWN_SKIPPED])
        line += "\n\n" + say("generation_skipped", count=len(job.skipped), files=files)
    if job.error:
        line += f"\n\n```\n{job.error[-1500:]}\n```"
    return percent, line


@dataclass(frozen=True)
class DataTab:
    """The Data tab's parts: the import summary, and the timer that polls the generation job."""

    summary: gr.Markdown
    timer: gr.Timer


def build_data_tab(services: Services) -> DataTab:
    t = tr
    with gr.Row():
        with gr.Column():
            kind = gr.Dropdown(list(IMPORTERS), value="seed-triplets", label=t("import_kind"))
            server_path = gr.Textbox(label=t("server_path"), elem_id="import-path")
            upload = gr.File(label=t("upload"), file_types=[".json", ".jsonl", ".csv"], type="filepath")
            check_files = gr.Checkbox(True, label=t("check_files"), elem_id="import-check-files")
            import_btn = gr.Button(t("import"), variant="primary", elem_id="btn-import")
            summary = gr.Markdown(elem_id="import-summary")
            skipped = gr.Dataframe(label=t("import_report"), interactive=False)
        with gr.Column():
            export_kind = gr.Dropdown(FILE_EXPORTS, value="triplets", label=t("export_kind"), elem_id="export-kind")
            gr.Markdown(t("export_kinds_help"), elem_id="export-kinds-help")
            human_only = gr.Checkbox(value=True, label=t("human_only"))
            export_btn = gr.Button(t("export"), variant="primary", elem_id="btn-export")
            export_file_out = gr.File(label=t("download"), interactive=False)
            export_summary = gr.Markdown()

    with gr.Group():
        gr.Markdown(t("batch_generate"))
        with gr.Row():
            gen_scope = gr.Dropdown(list(SCOPES), value="unlabelled", label=t("gen_scope"))
            gen_n = gr.Number(3, label=t("generate_n"), precision=0, minimum=1, maximum=10)
            gen_style = gr.Dropdown(list(STYLES), value="detailed", label=t("gen_style"))
            gen_language = gr.Dropdown(list(LANGUAGES), value="en", label=t("gen_language"))
        with gr.Row():
            gen_btn = gr.Button(t("gen_start"), variant="primary", elem_id="btn-generate-all")
            gen_cancel = gr.Button(t("cancel"), variant="stop", elem_id="btn-generate-cancel")
        gen_percent = gr.Slider(0, 100, value=0, label=t("progress"), interactive=False)
        gen_status = gr.Markdown(elem_id="generate-status")
    gen_start = gen_btn.click(user_errors(lambda *a: start_generation(services, *a)),
                              [gen_scope, gen_n, gen_style, gen_language], gen_status, api_name="generate_start")

    def cancel_generation():
        require(services, "generate_batch")
        return say("cancel_requested" if services.generation.cancel() else "no_generation_running")

    gen_cancel.click(user_errors(cancel_generation), None, gen_status, api_name="generate_cancel")
    timer = gr.Timer(POLL_SECONDS, active=False)  # polls only while a job runs (quiet when idle)
    gen_start.success(lambda: gr.Timer(active=True), None, timer, api_name=False)
    timer.tick(localized(lambda: generation_status(services)), None, [gen_percent, gen_status],
               api_name="generate_poll", show_progress="hidden", concurrency_limit=None
               ).then(lambda: gr.Timer(active=generation_running(services)), None, timer, api_name=False)

    def run_import(k, server, up, check=True, progress=gr.Progress()):
        return import_data(services, k, server, up, lambda d, n: progress((d, n), desc="importing"), check)

    # the summary is cleared first: an earlier import's result or error never stays above this one's
    import_btn.click(lambda: ("", None), None, [summary, skipped], api_name=False, queue=False).then(
        user_errors(run_import), [kind, server_path, upload, check_files], [summary, skipped], api_name="import")
    export_btn.click(user_errors(lambda k, h: export_data(services, k, h)), [export_kind, human_only],
                     [export_file_out, export_summary], api_name="export")
    return DataTab(summary, timer)
