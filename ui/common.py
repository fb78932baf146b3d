"""Shared by the tabs: UI text in English and Chinese, and turning bad input into a message for the user."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

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
    "val_split": "Validation share", "start": "Start training", "cancel": "Cancel", "promote": "Promote",
    "progress": "Progress", "log": "Log", "evaluation": "Held-out evaluation",
    "models": "Model versions", "compare": "Compare", "rollback": "Make active (roll back)",
    "model_a": "Model A", "model_b": "Model B", "refresh": "Refresh",
    "generate": "Generate candidates", "generate_n": "How many",
    "batch_generate": "Generate candidate captions with the active backbone", "gen_scope": "Images",
    "gen_style": "Style", "gen_language": "Language", "gen_start": "Generate for all of them",
    "gen_status": "Generation",
    "zoom_help": "Wheel zooms the image, drag pans it, double-click resets.",
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
    "lr": "学习率", "lora_rank": "LoRA 秩（0：全量微调）", "which_triplets": "三元组", "val_split": "验证比例",
    "start": "开始训练", "cancel": "取消", "promote": "设为当前模型", "progress": "进度", "log": "日志",
    "evaluation": "留出集评估", "models": "模型版本", "compare": "比较", "rollback": "设为当前（回滚）",
    "model_a": "模型 A", "model_b": "模型 B", "refresh": "刷新",
    "generate": "生成候选描述", "generate_n": "数量",
    "batch_generate": "用当前骨干模型生成候选描述", "gen_scope": "图像", "gen_style": "风格", "gen_language": "语言",
    "gen_start": "为这些图像生成", "gen_status": "生成",
    "zoom_help": "滚轮缩放图像，拖动平移，双击复原。",
}
# Keys are prefixed so they never collide with gradio's own translation keys (e.g. "image").
I18N = gr.I18n(en={f"rs_{k}": v for k, v in EN.items()}, zh={f"rs_{k}": v for k, v in ZH.items()})


def tr(key: str) -> gr.i18n.I18nData:
    """The UI text ``key`` in the browser's language (English or Chinese)."""
    if key not in EN:
        raise ValueError(f"no UI text named {key!r}")
    return I18N(f"rs_{key}")

USER_ERRORS = (ValueError, FileNotFoundError, PathOutsideRootError)


def user_errors(fn: Callable) -> Callable:
    """Show bad input (``ValueError``, ``FileNotFoundError``) as an error message instead of a crash."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as error:
            log.info("user error in %s: %s", getattr(fn, "__name__", fn), error)
            raise gr.Error(str(error)) from error

    return wrapper
