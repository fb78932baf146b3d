"""The prompts, in English and Chinese: one per caption style, one for hard negatives, and its parser."""

from __future__ import annotations

import json
import re

LANGUAGES = ("en", "zh")

CAPTION_PROMPTS: dict[str, dict[str, str]] = {
    "detailed": {
        "en": "Describe this remote sensing image in one detailed paragraph: the type of scene, the main "
              "objects with their counts, colours and positions (left, right, top, bottom, north, south), "
              "and how they are arranged. Answer with the description only.",
        "zh": "请用一段详细的文字描述这张遥感图像：场景类型，主要地物的数量、颜色和位置（左、右、上、下、"
              "东、南、西、北），以及它们的分布方式。只回答描述本身。",
    },
    "short": {
        "en": "Write one short sentence that describes this remote sensing image. Answer with the sentence only.",
        "zh": "请用一句简短的话描述这张遥感图像。只回答这句话。",
    },
    "objects": {
        "en": "Name the objects visible in this remote sensing image in one sentence, with the count, colour "
              "and position of each. Answer with the sentence only.",
        "zh": "请用一句话列出这张遥感图像中可见的地物，并说明每种地物的数量、颜色和位置。只回答这句话。",
    },
}
STYLES = tuple(CAPTION_PROMPTS)

HARD_NEGATIVE_PROMPTS = {
    "en": "Here is a caption of a remote sensing image:\n{caption}\n\n"
          "Write {n} hard negative captions: copies of this caption in which exactly 2 or 3 concrete details "
          "are changed — a count, a colour, a position (left/right, top/bottom, north/south, east/west) or one "
          "object replaced by another — and every other word is kept. Answer with a JSON array only, one object "
          'per caption, e.g. [{{"caption": "...", "edits": ["count", "colour"]}}]. '
          'Edit kinds are "count", "colour", "position" and "object".',
    "zh": "这是一张遥感图像的描述：\n{caption}\n\n"
          "请写出 {n} 条困难负样本描述：复制这条描述，只改动其中 2 到 3 个具体细节——数量、颜色、位置"
          "（左/右、上/下、东/西、南/北），或把一种地物换成另一种——其余文字保持不变。只回答一个 JSON 数组，"
          '每条描述一个对象，例如 [{{"caption": "...", "edits": ["count", "colour"]}}]。'
          '改动类型为 "count"、"colour"、"position" 和 "object"。',
}


def caption_prompt(style: str, language: str) -> str:
    try:
        return CAPTION_PROMPTS[style][language]
    except KeyError:
        raise ValueError(f"no caption prompt for style {style!r} in language {language!r}") from None


def hard_negative_prompt(caption: str, n: int, language: str) -> str:
    if language not in HARD_NEGATIVE_PROMPTS:
        raise ValueError(f"no hard-negative prompt in language {language!r}")
    return HARD_NEGATIVE_PROMPTS[language].format(caption=caption, n=n)


def parse_negative_proposals(answer: str) -> list[tuple[str, list[str]]]:
    """An LLM answer → [(caption, declared edit kinds)]; anything that is not the asked-for JSON → [].

    Accepts the JSON array alone or wrapped in prose / a Markdown code fence; items may be objects
    ``{"caption", "edits"}`` or plain strings.
    """
    match = re.search(r"\[.*\]", answer, flags=re.DOTALL)
    if match is None:
        return []
    try:
        items = json.loads(match.group(0))
    except json.JSONDecodeError:
        return []
    proposals = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str):
            proposals.append((item, []))
        elif isinstance(item, dict) and isinstance(item.get("caption"), str):
            edits = item.get("edits")
            kinds = [str(kind).lower() for kind in edits] if isinstance(edits, list) else []
            proposals.append((item["caption"], kinds))
    return proposals
