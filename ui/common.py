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
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import gradio as gr

from common.paths import PathOutsideRootError
from loop.services import STORAGE_ERRORS, storage_problem

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
    "keys_help": "Keys: **↑/↓** or **j/k** select · **a** accept · **x** reject · **1–9** best (row) · "
                 "**space** next image · **p** or **←** previous image · **backspace** undo · **e** edit the "
                 "selected caption · **c** add a caption · **Enter** saves the edit / adds the caption · "
                 "**Shift+Enter** new line · **Esc** cancels the edit and leaves the box · **h** hide the caption · "
                 "**H** hide the image · **?** the key settings (keys can be changed there)",
    "previous": "Previous image (p)", "accept_advances": "Accept moves to the next image",
    "hide_caption": "Hide caption (h)", "hide_image": "Hide image (H)", "key_settings": "Keys (change them here)",
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
    "batch_size": "Batch size", "grad_accum": "Gradient accumulation (micro-batches a step)",
    "grad_checkpointing": "Gradient checkpointing (less memory, ~30% slower)",
    "evaluations": "Held-out evaluations during the run", "max_held_out": "Held-out triplets at most (0: all)",
    "estimate": "{settings}. Estimate: {per_step:.1f} s a step, {total} for {steps} steps and {evals} "
                "evaluations of {held_out} triplets ({basis})",
    "model_released": "the model is released while {why}: the scores shown are the stored ones",
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
    "verdict_clear": "clear (annotators' verdicts count again)",
    "queue_empty": "no image left in the queue", "opened_image": "opened image {id}",
    "skipped_unreadable": "skipped image {id} (`{path}`), it cannot be shown: {error}",
    "caption_ref": "row {row} “{words}”", "caption_ref_hidden": "“{words}”",
    "saved_verdict": "saved: {verdict} · {caption}", "nothing_to_undo": "nothing left to undo",
    "undone": "undone: {verdict} · {caption}", "saved_edit": "saved: edit · {old} → {new}",
    "saved_new_caption": "saved: new caption · {caption}", "generated": "generated {count} caption(s) with {source}",
    "added_negatives": "added {count} hard negative(s) of {caption}: {sources}",
    "no_previous_image": "no previous image in this session",
    "hidden_caption": "hidden: {caption} (Browse › Hidden restores it)",
    "hidden_image": "hidden: image {id} (Browse › Hidden restores it)",
    "err_name_required": "enter your name (annotator) first", "err_no_image": "no image is open",
    "err_no_caption_number": "image {image} has no caption number {number}",
    "err_generate_count": "number of captions to generate must be at least 1, got {n}",
    "status_running": "running", "status_done": "done", "status_failed": "failed", "status_cancelled": "cancelled",
    "status_importing": "importing", "status_interrupted": "interrupted (the app ended during the run)",
    "err_disk_full": "disk full: this action was not saved; nothing saved before was lost",
    "err_read_only": "the data folder is read-only: this action was not saved; nothing saved before was lost",
    "err_storage": "the store could not save this action ({error}); nothing saved before was lost",
    "read_only_banner": "**Read-only mode**: the data folder cannot be written; you can look and search, "
                        "but nothing can be saved.",
    "check_files": "Check that every image exists and decodes",
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
    "hidden_items": "Hidden images and captions", "hidden_choice": "Hidden item to restore", "restore": "Restore",
    "item_image": "image", "item_caption": "caption", "restored": "restored: {item} {id}",
    "err_choose_hidden": "choose a hidden image or caption to restore",
    "tab_review": "Review", "include_resolved": "Show resolved items too", "review_items": "Items to review",
    "review_which": "Caption", "review_verdict": "Your verdict", "review_note": "Note (optional)",
    "resolve": "Resolve", "annotator_progress": "**Annotators: progress and agreement**",
    "kind_disagreement": "annotators disagree", "kind_best-pick": "best picks differ",
    "kind_model-contradiction": "contradicts the model",
    "reason_disagreement": "verdicts differ: {said}", "reason_best_pick": "best picks differ: {who}",
    "reason_contradiction": "{said}, yet the model ranks it {rank} (score {score:.3f} against {other:.3f})",
    "review_caption": "caption {n}", "review_verdicts": "verdicts", "review_model": "model",
    "review_resolution": "resolution", "review_score": "score {score:.3f} · rank {rank}",
    "agreement_line": "Cohen's κ (all pairs pooled): **{kappa}** on {items} shared items",
    "resolved": "resolved: {verdict} · caption {caption} of image {image} (its triplets follow)",
    "err_no_review_item": "there is no review item number {number}; refresh the list",
    "err_choose_review_item": "choose an item in the list first",
    "col_active": "active", "col_created": "created", "col_parent": "parent", "col_run": "run",
    "col_metric": "metric", "active_suffix": " (active)",
    "compare_same_set": "both measured on the held-out triplets of training run {run}",
    "compare_different_sets": "no run evaluated both: each version's latest held-out numbers ({runs}), on "
                              "different held-out sets",
    "export_kinds_help": (
        "- **triplets** — triplets (image, positive, negative), one per record: what train.py reads\n"
        "- **seed-triplets** — one record per image: the best caption and its negatives (the original format)\n"
        "- **best-captions**, **best-captions-csv**, **best-captions-parquet** — the best caption of each image "
        "as JSON, CSV or Parquet\n"
        "- **decisions-csv**, **decisions-parquet** — every caption with each annotator's latest verdict\n"
        "- **hf-dataset** — a Hugging Face dataset folder, zipped (`datasets.load_from_disk` once unzipped): "
        "image, best caption, accepted and rejected captions\n"
        "- **hf-parquet** — the same dataset as one Parquet file (`datasets.load_dataset(\"parquet\", ...)`)"),
    "active_model_choice": "active model", "triplets_all": "all", "triplets_human": "human only",
    "plot_loss": "loss", "plot_accuracy": "accuracy", "axis_step": "step", "axis_value": "value",
    "axis_series": "series", "col_active_model": "active", "col_new_model": "new", "error_title": "Error",
    "col_id": "id", "col_path": "path", "col_class": "class", "col_captions": "captions",
    "col_annotators": "annotators", "col_item": "item", "col_image": "image", "col_hidden_by": "hidden by",
    "col_when": "when", "col_kind": "kind", "col_reason": "reason", "col_number": "#", "col_annotator": "annotator",
    "col_decisions": "decisions", "col_images": "images", "col_accept": "accept", "col_reject": "reject",
    "col_best": "best", "col_edit": "edit", "col_undone": "undone", "col_last": "last action",
    "col_annotator_a": "annotator A", "col_annotator_b": "annotator B", "col_kappa": "κ", "col_items": "items",
    "col_agreed": "agreed", "col_row": "row",
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
    "keys_help": "按键：**↑/↓** 或 **j/k** 选择 · **a** 接受 · **x** 拒绝 · **1–9** 最佳（行）· "
                 "**空格** 下一张 · **p** 或 **←** 上一张 · **退格** 撤销 · **e** 编辑所选描述 · **c** 添加描述 · "
                 "**Enter** 保存修改 / 添加描述 · **Shift+Enter** 换行 · **Esc** 取消编辑并离开文本框 · "
                 "**h** 隐藏描述 · **H** 隐藏图像 · **?** 按键设置（可在此修改按键）",
    "previous": "上一张 (p)", "accept_advances": "接受后转到下一张",
    "hide_caption": "隐藏描述 (h)", "hide_image": "隐藏图像 (H)", "key_settings": "按键（可在此修改）",
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
    "batch_size": "批大小", "grad_accum": "梯度累积（每步的微批数）",
    "grad_checkpointing": "梯度检查点（省内存，约慢 30%）",
    "evaluations": "训练中的留出集评估次数", "max_held_out": "留出三元组上限（0：全部）",
    "estimate": "{settings}。估计：每步 {per_step:.1f} 秒，{steps} 步和 {evals} 次 {held_out} 个三元组的评估"
                "共 {total}（{basis}）",
    "model_released": "模型在{why}期间已释放：显示的是已存储的分数",
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
    "verdict_clear": "清除（标注者的判定重新生效）",
    "queue_empty": "队列中没有剩余图像", "opened_image": "已打开图像 {id}",
    "skipped_unreadable": "已跳过图像 {id}（`{path}`），无法显示：{error}",
    "caption_ref": "第 {row} 行“{words}”", "caption_ref_hidden": "“{words}”",
    "saved_verdict": "已保存：{verdict} · {caption}", "nothing_to_undo": "没有可撤销的操作",
    "undone": "已撤销：{verdict} · {caption}", "saved_edit": "已保存：编辑 · {old} → {new}",
    "saved_new_caption": "已保存：新描述 · {caption}", "generated": "已用 {source} 生成 {count} 条描述",
    "added_negatives": "已为{caption}添加 {count} 条困难负例：{sources}",
    "no_previous_image": "本次会话中没有上一张图像",
    "hidden_caption": "已隐藏：{caption}（可在“浏览 › 已隐藏”中恢复）",
    "hidden_image": "已隐藏：图像 {id}（可在“浏览 › 已隐藏”中恢复）",
    "err_name_required": "请先输入你的名字（标注者）", "err_no_image": "没有打开的图像",
    "err_no_caption_number": "图像 {image} 没有第 {number} 条描述",
    "err_generate_count": "生成描述的数量至少为 1，收到 {n}",
    "status_running": "运行中", "status_done": "完成", "status_failed": "失败", "status_cancelled": "已取消",
    "status_importing": "导入中", "status_interrupted": "已中断（运行期间应用已退出）",
    "err_disk_full": "磁盘已满：此操作未保存；之前保存的内容没有丢失",
    "err_read_only": "数据目录为只读：此操作未保存；之前保存的内容没有丢失",
    "err_storage": "存储无法保存此操作（{error}）；之前保存的内容没有丢失",
    "read_only_banner": "**只读模式**：数据目录不可写；可以查看和搜索，但无法保存任何内容。",
    "check_files": "检查每张图像是否存在且可解码",
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
    "hidden_items": "已隐藏的图像和描述", "hidden_choice": "要恢复的隐藏项", "restore": "恢复",
    "item_image": "图像", "item_caption": "描述", "restored": "已恢复：{item} {id}",
    "err_choose_hidden": "请选择要恢复的隐藏图像或描述",
    "tab_review": "审核", "include_resolved": "同时显示已解决的条目", "review_items": "待审核条目",
    "review_which": "描述", "review_verdict": "你的判定", "review_note": "备注（可选）",
    "resolve": "裁定", "annotator_progress": "**标注者：进度与一致性**",
    "kind_disagreement": "标注者意见不一", "kind_best-pick": "最佳选择不同", "kind_model-contradiction": "与模型相悖",
    "reason_disagreement": "判定不一：{said}", "reason_best_pick": "最佳选择不同：{who}",
    "reason_contradiction": "{said}，但模型将其排在第 {rank} 位（分数 {score:.3f}，对比 {other:.3f}）",
    "review_caption": "描述 {n}", "review_verdicts": "判定", "review_model": "模型", "review_resolution": "裁定",
    "review_score": "分数 {score:.3f} · 排名 {rank}",
    "agreement_line": "Cohen κ（所有标注者对合并）：**{kappa}**，共 {items} 个共同条目",
    "resolved": "已裁定：{verdict} · 图像 {image} 的描述 {caption}（三元组随之更新）",
    "err_no_review_item": "没有第 {number} 个审核条目；请刷新列表",
    "err_choose_review_item": "请先在列表中选择一个条目",
    "col_active": "当前", "col_created": "创建时间", "col_parent": "父版本", "col_run": "训练任务", "col_path": "路径",
    "col_metric": "指标", "active_suffix": "（当前）",
    "compare_same_set": "两者均在训练任务 {run} 的留出三元组上测得",
    "compare_different_sets": "没有同时评估两者的任务：各版本最近的留出集结果（{runs}），留出集不同",
    "export_kinds_help": (
        "- **triplets** — 三元组（图像、正例、负例），每条一个：train.py 读取的格式\n"
        "- **seed-triplets** — 每张图像一条：最佳描述及其负例（原项目的格式）\n"
        "- **best-captions**, **best-captions-csv**, **best-captions-parquet** — "
        "每张图像的最佳描述，JSON、CSV 或 Parquet\n"
        "- **decisions-csv**, **decisions-parquet** — 每条描述及每位标注者的最新判定\n"
        "- **hf-dataset** — Hugging Face 数据集文件夹，打包为 zip（解压后用 `datasets.load_from_disk` 打开）："
        "图像、最佳描述、接受与拒绝的描述\n"
        "- **hf-parquet** — 同一数据集的单个 Parquet 文件（`datasets.load_dataset(\"parquet\", ...)`）"),
    "active_model_choice": "当前模型", "triplets_all": "全部", "triplets_human": "仅人工",
    "plot_loss": "损失", "plot_accuracy": "准确率", "axis_step": "步数", "axis_value": "数值", "axis_series": "曲线",
    "col_active_model": "当前模型", "col_new_model": "新模型", "error_title": "错误",
    "col_id": "编号", "col_class": "类别", "col_captions": "描述数", "col_annotators": "标注者数",
    "col_item": "类型", "col_image": "图像", "col_hidden_by": "隐藏者", "col_when": "时间", "col_kind": "种类",
    "col_reason": "原因", "col_number": "#", "col_annotator": "标注者", "col_decisions": "判定数",
    "col_images": "图像数",
    "col_accept": "接受", "col_reject": "拒绝", "col_best": "最佳", "col_edit": "编辑", "col_undone": "撤销",
    "col_last": "最近操作", "col_annotator_a": "标注者 A", "col_annotator_b": "标注者 B", "col_kappa": "κ",
    "col_items": "条目",
    "col_agreed": "一致", "col_row": "行",
    "active_model_is": "当前模型：v{model}", "err_choose_model": "请选择一个模型版本",
    "err_choose_two": "请选择两个已有的模型版本（收到 {a} 和 {b}）",
}

# The key settings panel's names of the actions (keyboard.js gets them as JSON).
KEY_LABELS = {
    "en": {"up": "Select the row above", "down": "Select the row below", "accept": "Accept", "reject": "Reject",
           "next": "Next image / skip", "previous": "Previous image", "undo": "Undo", "edit": "Edit the caption",
           "add": "Add a caption", "hide_caption": "Hide the caption", "hide_image": "Hide the image",
           "settings": "Open these settings", "best": "Best: row", "press_key": "press a key…",
           "reset_keys": "Reset to the default keys"},
    "zh": {"up": "选择上一行", "down": "选择下一行", "accept": "接受", "reject": "拒绝", "next": "下一张 / 跳过",
           "previous": "上一张", "undo": "撤销", "edit": "编辑描述", "add": "添加描述", "hide_caption": "隐藏描述",
           "hide_image": "隐藏图像", "settings": "打开按键设置", "best": "最佳：第几行", "press_key": "请按一个键…",
           "reset_keys": "恢复默认按键"},
}

# Words of metric names (``val/hard_accuracy``, ``held_out_mean_accuracy``) in Chinese; loss names stay as
# they are (InfoNCE, SigLIP, focal triplet are proper names).
METRIC_WORDS_ZH = {"loss": "损失", "accuracy": "准确率", "hard": "困难", "mean": "平均", "val": "验证", "train": "训练",
                   "held": "留出", "out": "集", "total": "总", "recall": "召回率", "margin": "间隔", "top1": "首位",
                   "easy": "简单", "lr": "学习率", "rank": "排名", "pairs": "对"}


def metric_label(name: str) -> str:
    """A metric's name as the UI shows it: as is in English, word by word in Chinese."""
    if _language.get() != "zh":
        return name
    return re.sub(r"[A-Za-z0-9]+", lambda m: METRIC_WORDS_ZH.get(m.group(0), m.group(0)), name)


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


def headers(*keys: str) -> list[str]:
    """Table column names ``col_<key>`` in the language of the request being handled."""
    return [say(f"col_{key}") for key in keys]


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
        token = _user.set(getattr(ui_request, "username", None) or None)
        try:
            with language(request_language(ui_request)):
                return fn(*args, **kwargs)
        finally:
            _user.reset(token)

    request_param = inspect.Parameter("ui_request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
    wrapper.__signature__ = signature.replace(parameters=[request_param, *signature.parameters.values()])
    wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}), "ui_request": gr.Request}
    return wrapper


USER_ERRORS = (ValueError, FileNotFoundError, PathOutsideRootError)
_user: ContextVar[str | None] = ContextVar("ui_user", default=None)
_public_roots: dict[str, str] = {}  # absolute folder → how a browser is shown it ("" for the image root)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"`:,;()\[\]{}<>/]+/)*[^\s'\"`:,;()\[\]{}<>/]+")


def current_user() -> str | None:
    """The logged-in user of the request being handled (None without ``--auth``, or outside a request)."""
    return _user.get()


def acting_user(given: str | None) -> str:
    """Who acts: the logged-in user when there is one (a name the client gives is then ignored), else the
    name typed in the annotator box."""
    return current_user() or (given or "").strip()


def require(services, action: str) -> None:
    """Refuse ``action`` (``loop.access.ADMIN_ACTIONS``) unless the logged-in user's role allows it."""
    services.access.require(current_user(), action)


def publish_roots(image_root: Path, data_dir: Path) -> None:
    """Folders whose absolute paths a browser never sees: the image root (paths are shown relative to it)
    and the data folder (shown as ``data/``)."""
    for folder, shown in ((image_root, ""), (data_dir, "data/")):
        for form in {str(folder), str(Path(folder).resolve())}:
            _public_roots[form.rstrip("/") + "/"] = shown


def public_text(text: str) -> str:
    """``text`` as a browser may see it: paths under the image root made relative, the data folder as
    ``data/``, any other absolute path (a symlink target, a library file) cut to its file name."""
    for root in sorted(_public_roots, key=len, reverse=True):
        text = text.replace(root, _public_roots[root])
    return _ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


def storage_message(error: BaseException) -> str:
    """What the user is told when the store or a file could not be written."""
    problem = storage_problem(error)
    return say(f"err_{problem}") if problem else say("err_storage", error=public_text(str(error)))


def user_errors(fn: Callable) -> Callable:
    """A gradio handler (:func:`localized`) that shows bad input (``ValueError``, ``FileNotFoundError``) and a
    store that cannot write (full disk, read-only folder) as an error message naming the item, never an
    absolute server path (the server log keeps the full message)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as error:
            log.info("user error in %s: %s", getattr(fn, "__name__", fn), error)
            raise gr.Error(public_text(str(error)), title=say("error_title")) from error
        except STORAGE_ERRORS as error:
            log.error("storage error in %s: %s", getattr(fn, "__name__", fn), error)
            raise gr.Error(storage_message(error), title=say("error_title")) from error

    return localized(wrapper)
