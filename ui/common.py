"""Shared by the tabs: UI text in English and Chinese, and turning bad input into a message for the user.

Component labels are translated in the browser (``gr.I18n``, from the browser's locale). Text the handlers
write (status lines, counters, errors) is chosen on the server with :func:`say`, in the language of the
request being handled: :func:`localized` reads it from the request's ``Accept-Language`` header, which the
browser sets from the same locale. Outside a request (tests, the watcher thread) the text is English.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import gradio as gr

from common.paths import PathOutsideRootError

log = logging.getLogger(__name__)

EN = {
    "title": "Remote Scorer",
    "annotator": "Your name (annotator)",
    "tab_annotate": "Annotate", "tab_browse": "Browse / search", "tab_data": "Data", "tab_train": "Train",
    "tab_models": "Models",
    "image": "Image", "captions": "Candidate captions (ranked by the active model)",
    "accept": "Accept (a)", "reject": "Reject (x)", "next": "Next / skip (space)", "undo": "Undo (backspace)",
    "edit_selected": "Edit the selected caption (e)", "save_edit": "Save edit",
    "add_caption": "Add a caption", "add": "Add",
    "keys_help": "Keys: **↑/↓** or **j/k** select · **a** accept · **x** reject · **1–9** best · "
                 "**space** next · **backspace** undo · **e** edit · **c** add a caption · **Esc** leaves a text box",
    "query": "Describe what you look for", "search": "Search", "class": "Class", "status": "Status",
    "source": "Caption source", "results": "Results", "open_in_annotate": "Click an image to annotate it",
    "import_kind": "Import format", "server_path": "File on the server (under the image root)",
    "upload": "Or upload a file", "import": "Import", "import_report": "Import report",
    "export_kind": "Export format", "human_only": "Human decisions only", "export": "Export",
    "download": "Download",
    "base_model": "Start from", "loss": "Loss", "epochs": "Epochs", "max_steps": "Max steps (0: no limit)",
    "lr": "Learning rate", "lora_rank": "LoRA rank (0: full fine-tune)", "which_triplets": "Triplets",
    "lora_default_tiny": "{model} is on the tiny random backbone: 0 = fine-tune all of it",
    "lora_default_adapters": "{model} has LoRA adapters of rank {rank}: the run continues them",
    "lora_default_lora": "{model}: LoRA of rank {rank}; 0 would fine-tune the whole backbone (slow, and it is "
                         "saved at every evaluation)",
    "val_split": "Validation share", "start": "Start training", "cancel": "Cancel", "promote": "Promote",
    "progress": "Progress", "log": "Log", "evaluation": "Held-out evaluation",
    "models": "Model versions", "compare": "Compare", "rollback": "Make active (roll back)",
    "model_a": "Model A", "model_b": "Model B", "refresh": "Refresh",
    "generate": "Generate candidates", "generate_n": "How many",
    "hard_negatives": "Hard negatives of the selected caption",
    "batch_generate": "Generate candidate captions with the active backbone", "gen_scope": "Images",
    "gen_style": "Style", "gen_language": "Language", "gen_start": "Generate for all of them",
    "gen_status": "Generation",
    "zoom_help": "Wheel zooms the image, drag pans it, double-click resets.",
    "auto_promote": "Promote automatically if better on the held-out set",
    "auto_promote_info": "Compares the evaluator's primary metric (marked * in the held-out table) with the active "
                         "model's on the same held-out triplets; promotes only if strictly higher.",
    # -- text the handlers write (see say()) --
    "no_image_open": "No image open.", "enter_name_to_start": "enter your name to start",
    "counters": "**{done} / {total}** done · mine **{mine}** · today **{today}**",
    "image_info": "**Image {id}** · `{path}` · class **{cls}** · sources {sources} · model v{model}",
    "model_untrained": " (untrained)",
    "model_training": " · a better model is training (run {run}, Train tab): it ranks once it wins on held-out images",
    "col_caption": "caption", "col_score": "score", "col_source": "source", "col_verdict": "my verdict",
    "mark_accept": "✓ accept", "mark_reject": "✗ reject", "mark_best": "★ best",
    "verdict_accept": "accept", "verdict_reject": "reject", "verdict_best": "best", "verdict_edit": "edit",
    "queue_empty": "no image left in the queue", "opened_image": "opened image {id}",
    "skipped_unreadable": "skipped image {id} (`{path}`), it cannot be shown: {error}",
    "saved_verdict": "saved: {verdict} · caption {caption}", "nothing_to_undo": "nothing left to undo",
    "undone": "undone: {verdict} · caption {caption}", "saved_edit": "saved: edit · caption {old} → {new}",
    "saved_new_caption": "saved: new caption {caption}", "generated": "generated {count} caption(s) with {source}",
    "added_negatives": "added {count} hard negative(s) of caption {caption}: {sources}",
    "err_name_required": "enter your name (annotator) first", "err_no_image": "no image is open",
    "err_no_caption_number": "image {image} has no caption number {number}",
    "err_generate_count": "number of captions to generate must be at least 1, got {n}",
    "status_running": "running", "status_done": "done", "status_failed": "failed", "status_cancelled": "cancelled",
    "status_importing": "importing",
    "train_started": "training run {run} started", "no_training_run": "no training run yet",
    "run_status": "run {run}: **{status}** · step {step}{total} · {elapsed:.0f} s",
    "cancel_requested": "cancel requested", "no_run_running": "no run is running",
    "promoted": "promoted run {run}: model v{model} is now active",
    "err_no_run_to_promote": "no training run to promote",
    "auto_promoted": "auto-promoted: v{model} is now active (held-out {metric} {new:.4f} > {active:.4f} of "
                     "v{compared})",
    "not_promoted_not_better": "not promoted: held-out {metric} {new:.4f} is not above {active:.4f} of the active "
                               "v{compared}; Promote makes it active anyway",
    "not_promoted_off": "automatic promotion is off: held-out {metric} {new:.4f} (new) vs {active:.4f} (active "
                        "v{compared}); Promote makes it active",
    "not_promoted_active_changed": "not promoted: the active model changed during the run (v{compared} → "
                                   "v{current}); compare in Models and Promote by hand",
    "not_promoted_missing": "not promoted: the held-out {metric} is missing for the new or the active model; "
                            "Promote makes it active anyway",
    "promotion_failed": "automatic promotion failed: {error}",
    "generation_started": "generation job {job} started", "no_generation_job": "no generation job yet",
    "generation_status": "job {job}: **{status}** · {done} / {total} images · {elapsed:.0f} s",
    "generation_imported": " · imported: {summary}", "no_generation_running": "no generation job is running",
    "generation_skipped": "no captions for {count} image(s) that cannot be read: {files}",
    "err_import_source": "give a file on the server (relative to the image root) or upload one",
    "export_summary": "{kind}: {records} records → {file}",
    "active_model_is": "active model: v{model}", "err_choose_model": "choose a model version",
    "err_choose_two": "choose two existing model versions (got {a} and {b})",
}
ZH = {
    "title": "遥感描述评分器",
    "annotator": "你的名字（标注者）",
    "tab_annotate": "标注", "tab_browse": "浏览 / 搜索", "tab_data": "数据", "tab_train": "训练", "tab_models": "模型",
    "image": "图像", "captions": "候选描述（按当前模型排序）",
    "accept": "接受 (a)", "reject": "拒绝 (x)", "next": "下一张 / 跳过 (空格)", "undo": "撤销 (退格)",
    "edit_selected": "编辑所选描述 (e)", "save_edit": "保存修改", "add_caption": "添加描述", "add": "添加",
    "keys_help": "按键：**↑/↓** 或 **j/k** 选择 · **a** 接受 · **x** 拒绝 · **1–9** 最佳 · "
                 "**空格** 下一张 · **退格** 撤销 · **e** 编辑 · **c** 添加描述 · **Esc** 离开文本框",
    "query": "描述你要找的内容", "search": "搜索", "class": "类别", "status": "状态", "source": "描述来源",
    "results": "结果", "open_in_annotate": "点击图像进行标注",
    "import_kind": "导入格式", "server_path": "服务器上的文件（图像根目录下）", "upload": "或上传文件",
    "import": "导入", "import_report": "导入报告", "export_kind": "导出格式", "human_only": "仅人工决定",
    "export": "导出", "download": "下载",
    "base_model": "起始模型", "loss": "损失函数", "epochs": "轮数", "max_steps": "最大步数（0：不限）",
    "lr": "学习率", "lora_rank": "LoRA 秩（0：全量微调）",
    "lora_default_tiny": "{model} 使用随机初始化的微型骨干：0 = 全量微调",
    "lora_default_adapters": "{model} 已有秩为 {rank} 的 LoRA 适配器：训练将继续它们",
    "lora_default_lora": "{model}：秩为 {rank} 的 LoRA；0 会全量微调整个骨干（很慢，且每次评估都保存它）",
    "which_triplets": "三元组", "val_split": "验证比例",
    "start": "开始训练", "cancel": "取消", "promote": "设为当前模型", "progress": "进度", "log": "日志",
    "evaluation": "留出集评估", "models": "模型版本", "compare": "比较", "rollback": "设为当前（回滚）",
    "model_a": "模型 A", "model_b": "模型 B", "refresh": "刷新",
    "generate": "生成候选描述", "generate_n": "数量", "hard_negatives": "为所选描述生成困难负例",
    "batch_generate": "用当前骨干模型生成候选描述", "gen_scope": "图像", "gen_style": "风格", "gen_language": "语言",
    "gen_start": "为这些图像生成", "gen_status": "生成",
    "zoom_help": "滚轮缩放图像，拖动平移，双击复原。",
    "auto_promote": "若在留出集上更好则自动设为当前模型",
    "auto_promote_info": "用评估器的主指标（留出集评估表中标 * 者）与当前模型在同一留出三元组上比较；严格更高才提升。",
    "no_image_open": "未打开图像。", "enter_name_to_start": "输入你的名字开始",
    "counters": "已完成 **{done} / {total}** · 我的 **{mine}** · 今天 **{today}**",
    "image_info": "**图像 {id}** · `{path}` · 类别 **{cls}** · 来源 {sources} · 模型 v{model}",
    "model_untrained": "（未训练）",
    "model_training": " · 更好的模型正在训练（运行 {run}，见训练页）：在留出图像上胜出后即用于排序",
    "col_caption": "描述", "col_score": "分数", "col_source": "来源", "col_verdict": "我的判定",
    "mark_accept": "✓ 接受", "mark_reject": "✗ 拒绝", "mark_best": "★ 最佳",
    "verdict_accept": "接受", "verdict_reject": "拒绝", "verdict_best": "最佳", "verdict_edit": "编辑",
    "queue_empty": "队列中没有剩余图像", "opened_image": "已打开图像 {id}",
    "skipped_unreadable": "已跳过图像 {id}（`{path}`），无法显示：{error}",
    "saved_verdict": "已保存：{verdict} · 描述 {caption}", "nothing_to_undo": "没有可撤销的操作",
    "undone": "已撤销：{verdict} · 描述 {caption}", "saved_edit": "已保存：编辑 · 描述 {old} → {new}",
    "saved_new_caption": "已保存：新描述 {caption}", "generated": "已用 {source} 生成 {count} 条描述",
    "added_negatives": "已为描述 {caption} 添加 {count} 条困难负例：{sources}",
    "err_name_required": "请先输入你的名字（标注者）", "err_no_image": "没有打开的图像",
    "err_no_caption_number": "图像 {image} 没有第 {number} 条描述",
    "err_generate_count": "生成描述的数量至少为 1，收到 {n}",
    "status_running": "运行中", "status_done": "完成", "status_failed": "失败", "status_cancelled": "已取消",
    "status_importing": "导入中",
    "train_started": "训练任务 {run} 已开始", "no_training_run": "还没有训练任务",
    "run_status": "任务 {run}：**{status}** · 第 {step}{total} 步 · {elapsed:.0f} 秒",
    "cancel_requested": "已请求取消", "no_run_running": "没有正在运行的任务",
    "promoted": "已提升任务 {run}：模型 v{model} 现为当前模型", "err_no_run_to_promote": "没有可提升的训练任务",
    "auto_promoted": "已自动提升：v{model} 现为当前模型（留出集 {metric} {new:.4f} > v{compared} 的 {active:.4f}）",
    "not_promoted_not_better": "未提升：留出集 {metric} {new:.4f} 不高于当前 v{compared} 的 {active:.4f}；"
                               "可点“设为当前模型”手动提升",
    "not_promoted_off": "自动提升已关闭：留出集 {metric} 新模型 {new:.4f}，当前 v{compared} {active:.4f}；可手动提升",
    "not_promoted_active_changed": "未提升：训练期间当前模型已改变（v{compared} → v{current}）；"
                                   "请在“模型”页比较后手动提升",
    "not_promoted_missing": "未提升：新模型或当前模型缺少留出集 {metric}；可手动提升",
    "promotion_failed": "自动提升失败：{error}",
    "generation_started": "生成任务 {job} 已开始", "no_generation_job": "还没有生成任务",
    "generation_status": "任务 {job}：**{status}** · {done} / {total} 张图像 · {elapsed:.0f} 秒",
    "generation_imported": " · 已导入：{summary}", "no_generation_running": "没有正在运行的生成任务",
    "generation_skipped": "{count} 张图像无法读取，未生成描述：{files}",
    "err_import_source": "请给出服务器上的文件（相对于图像根目录）或上传文件",
    "export_summary": "{kind}：{records} 条记录 → {file}",
    "active_model_is": "当前模型：v{model}", "err_choose_model": "请选择一个模型版本",
    "err_choose_two": "请选择两个已有的模型版本（收到 {a} 和 {b}）",
}

# Keys are prefixed so they never collide with gradio's own translation keys (e.g. "image").
I18N = gr.I18n(en={f"rs_{k}": v for k, v in EN.items()}, zh={f"rs_{k}": v for k, v in ZH.items()})
TEXTS = {"en": EN, "zh": ZH}
_language: ContextVar[str] = ContextVar("ui_language", default="en")


def tr(key: str) -> gr.i18n.I18nData:
    """The UI label ``key`` in the browser's language (English or Chinese), translated by the browser."""
    if key not in EN:
        raise ValueError(f"no UI text named {key!r}")
    return I18N(f"rs_{key}")


def say(key: str, **values) -> str:
    """Handler text ``key`` filled with ``values``, in the language of the request being handled."""
    if key not in EN:
        raise ValueError(f"no UI text named {key!r}")
    return TEXTS[_language.get()].get(key, EN[key]).format(**values)


def accepted_language(header: str | None) -> str:
    """The UI language ("en" or "zh") an ``Accept-Language`` header prefers most; English when none fits."""
    ranked = []
    for order, part in enumerate((header or "").split(",")):
        tag, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        code = tag.lower().split("-")[0]
        if code in TEXTS and quality > 0:
            ranked.append((-quality, order, code))
    return min(ranked)[2] if ranked else "en"


@contextmanager
def language(code: str) -> Iterator[None]:
    """Write handler texts in ``code`` ("en" or "zh") inside the block."""
    if code not in TEXTS:
        raise ValueError(f"no UI language {code!r}; choose one of {', '.join(TEXTS)}")
    token = _language.set(code)
    try:
        yield
    finally:
        _language.reset(token)


def request_language(request: gr.Request | None) -> str:
    headers = getattr(request, "headers", None) or {}
    return accepted_language(next((v for k, v in headers.items() if k.lower() == "accept-language"), None))


def localized(fn: Callable) -> Callable:
    """``fn`` as a gradio handler whose :func:`say` texts follow the request's ``Accept-Language``.

    gradio passes the request to a parameter annotated ``gr.Request``; the wrapper adds one in front of
    ``fn``'s own parameters (so ``gr.SelectData`` and ``gr.Progress`` parameters keep working).
    """
    signature = inspect.signature(fn)
    if "ui_request" in signature.parameters:
        raise ValueError(f"{getattr(fn, '__name__', fn)} already has a parameter named ui_request")

    @functools.wraps(fn)
    def wrapper(ui_request, *args, **kwargs):
        with language(request_language(ui_request)):
            return fn(*args, **kwargs)

    request_param = inspect.Parameter("ui_request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
    wrapper.__signature__ = signature.replace(parameters=[request_param, *signature.parameters.values()])
    wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), "ui_request": gr.Request}
    return wrapper


USER_ERRORS = (ValueError, FileNotFoundError, PathOutsideRootError)


def user_errors(fn: Callable) -> Callable:
    """A gradio handler (:func:`localized`) that shows bad input (``ValueError``, ``FileNotFoundError``) as an
    error message instead of a crash."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as error:
            log.info("user error in %s: %s", getattr(fn, "__name__", fn), error)
            raise gr.Error(str(error)) from error

    return localized(wrapper)
