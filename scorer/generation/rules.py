"""A deterministic hard-negative editor: change 2–3 concrete details of a caption, nothing else.

Edit sites are words of four kinds — counts, colours, positions, objects — found with small
English and Chinese vocabularies; each site knows its replacements (another number, another
colour, the opposite side, another object of the same family). :func:`find_sites` is also how
LLM-proposed edits are classified.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from scorer.generation.base import text_key

EDIT_KINDS = ("count", "colour", "position", "object")
_CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass(frozen=True)
class HardNegative:
    text: str
    edit_kinds: tuple[str, ...]  # a subset of EDIT_KINDS, in that order
    n_changes: int  # details changed
    method: str  # "rule" | "llm:<generator name>"


@dataclass(frozen=True)
class EditSite:
    start: int
    end: int
    kind: str
    options: tuple[str, ...]  # replacements, each different from caption[start:end]


def detect_language(text: str) -> str:
    return "zh" if _CJK.search(text) else "en"


# -- English vocabulary ------------------------------------------------------------------------------
NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
COLOURS_EN = ("red", "green", "blue", "white", "black", "gray", "grey", "yellow", "brown", "orange", "purple")
_OPPOSITES_EN = (("left", "right"), ("north", "south"), ("east", "west"), ("northeast", "southwest"),
                 ("northwest", "southeast"), ("north-east", "south-west"), ("north-west", "south-east"),
                 ("northern", "southern"), ("eastern", "western"), ("top", "bottom"), ("upper", "lower"),
                 ("above", "below"), ("leftmost", "rightmost"))
POSITIONS_EN = {a: b for pair in _OPPOSITES_EN for a, b in (pair, pair[::-1])}
# Families of (singular, plural): a swap stays inside a family, so the result is plausible but wrong.
OBJECT_FAMILIES_EN = (
    (("car", "cars"), ("truck", "trucks"), ("bus", "buses"), ("airplane", "airplanes"),
     ("helicopter", "helicopters"), ("boat", "boats"), ("train", "trains")),
    (("house", "houses"), ("warehouse", "warehouses"), ("church", "churches"), ("stadium", "stadiums"),
     ("storage tank", "storage tanks"), ("bridge", "bridges"), ("greenhouse", "greenhouses")),
    (("road", "roads"), ("river", "rivers"), ("railway", "railways"), ("runway", "runways"),
     ("lake", "lakes"), ("pond", "ponds"), ("canal", "canals")),
    (("tennis court", "tennis courts"), ("basketball court", "basketball courts"),
     ("baseball field", "baseball fields"), ("soccer field", "soccer fields"),
     ("swimming pool", "swimming pools"), ("golf course", "golf courses"), ("parking lot", "parking lots")),
    (("tree", "trees"), ("bush", "bushes")),
    (("forest", "forests"), ("farmland", "farmlands"), ("grassland", "grasslands"), ("desert", "deserts"),
     ("beach", "beaches")),
)

# -- Chinese vocabulary ------------------------------------------------------------------------------
ZH_DIGITS = "零一二三四五六七八九"
COLOURS_ZH = "红绿蓝白黑灰黄棕橙紫"
_SWAP_ZH = {"左": "右", "右": "左", "东": "西", "西": "东", "南": "北", "北": "南"}
POSITIONS_ZH = {"上方": "下方", "下方": "上方", "上部": "下部", "下部": "上部", "顶部": "底部", "底部": "顶部",
                "上侧": "下侧", "下侧": "上侧"}
NOT_POSITIONS_ZH = {"左右", "东西", "南北"}  # "about", "things", "north–south": not a side
NOT_NUMBERS_ZH = ("十字", "三角", "四周", "四面", "五颜六色", "八角", "三维", "二维")
OBJECT_FAMILIES_ZH = (
    ("汽车", "卡车", "公交车", "飞机", "直升机", "船", "火车"),
    ("房屋", "仓库", "教堂", "体育场", "储油罐", "桥梁", "温室"),
    ("道路", "河流", "铁路", "跑道", "湖泊", "池塘", "运河"),
    ("网球场", "篮球场", "棒球场", "足球场", "游泳池", "高尔夫球场", "停车场"),
    ("树木", "灌木"),
    ("森林", "农田", "草地", "沙漠", "海滩"),
)


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _match_case(original: str, replacement: str) -> str:
    return replacement[:1].upper() + replacement[1:] if original[:1].isupper() else replacement


def _nearby_numbers(value: int, limit: int) -> list[int]:
    candidates = (value + 1, value - 1, value + 2, value - 2, value + 3, value * 2)
    return list(dict.fromkeys(v for v in candidates if 2 <= v <= limit and v != value))


def _digit_sites(text: str, pattern: str) -> list[EditSite]:
    return [EditSite(m.start(), m.end(), "count", tuple(map(str, _nearby_numbers(int(m.group()), 200_000))))
            for m in re.finditer(pattern, text) if 2 <= int(m.group()) <= 100_000]


def _english_sites(text: str) -> list[EditSite]:
    sites = _digit_sites(text, r"\b\d+\b")
    for m in re.finditer(rf"\b({_alternation(NUMBER_WORDS)})\b", text, flags=re.IGNORECASE):
        value = NUMBER_WORDS.index(m.group().lower()) + 2
        words = [_match_case(m.group(), NUMBER_WORDS[v - 2]) for v in _nearby_numbers(value, len(NUMBER_WORDS) + 1)]
        sites.append(EditSite(m.start(), m.end(), "count", tuple(words)))
    for m in re.finditer(rf"\b({_alternation(COLOURS_EN)})\b", text, flags=re.IGNORECASE):
        same = {"gray", "grey"} if m.group().lower() in ("gray", "grey") else {m.group().lower()}
        sites.append(EditSite(m.start(), m.end(), "colour",
                              tuple(_match_case(m.group(), c) for c in COLOURS_EN if c not in same)))
    for m in re.finditer(rf"\b({_alternation(POSITIONS_EN)})\b", text, flags=re.IGNORECASE):
        opposite = _match_case(m.group(), POSITIONS_EN[m.group().lower()])
        sites.append(EditSite(m.start(), m.end(), "position", (opposite,)))
    forms = {form: (family, number) for family in OBJECT_FAMILIES_EN for entry in family
             for number, form in enumerate(entry)}
    for m in re.finditer(rf"\b({_alternation(forms)})\b", text, flags=re.IGNORECASE):
        family, number = forms[m.group().lower()]
        options = tuple(_match_case(m.group(), entry[number]) for entry in family
                        if entry[number] != m.group().lower())
        sites.append(EditSite(m.start(), m.end(), "object", options))
    return sites


def zh_number(text: str) -> int | None:
    """两 / 三 / 十二 / 二十五 → int (2–99); anything else → None."""
    digits = {c: i for i, c in enumerate(ZH_DIGITS)} | {"两": 2}
    if len(text) == 1 and text in digits:
        return digits[text]
    tens, _, units = text.partition("十")
    if "十" not in text or len(tens) > 1 or len(units) > 1 or any(c not in digits for c in tens + units):
        return None
    return (digits[tens] if tens else 1) * 10 + (digits[units] if units else 0)


def zh_numeral(value: int) -> str:
    if value == 2:
        return "两"
    if value < 10:
        return ZH_DIGITS[value]
    tens, units = divmod(value, 10)
    return ("" if tens == 1 else ZH_DIGITS[tens]) + "十" + (ZH_DIGITS[units] if units else "")


def _chinese_sites(text: str) -> list[EditSite]:
    sites = _digit_sites(text, r"\d+")
    for m in re.finditer(r"[两二三四五六七八九十]+", text):
        value = zh_number(m.group())
        ordinal = text[m.start() - 1:m.start()] == "第"
        if value is None or value < 2 or ordinal or text.startswith(NOT_NUMBERS_ZH, m.start()):
            continue
        sites.append(EditSite(m.start(), m.end(), "count", tuple(zh_numeral(v) for v in _nearby_numbers(value, 99))))
    for m in re.finditer(f"[{COLOURS_ZH}](?=色|顶|瓦|墙)", text):
        sites.append(EditSite(m.start(), m.end(), "colour", tuple(c for c in COLOURS_ZH if c != m.group())))
    pattern = _alternation(list(POSITIONS_ZH) + ["东北", "东南", "西北", "西南", *NOT_POSITIONS_ZH]) + "|[左右东西南北]"
    for m in re.finditer(pattern, text):
        if m.group() in NOT_POSITIONS_ZH:
            continue
        swapped = POSITIONS_ZH.get(m.group()) or "".join(_SWAP_ZH[c] for c in m.group())
        sites.append(EditSite(m.start(), m.end(), "position", (swapped,)))
    families = {word: family for family in OBJECT_FAMILIES_ZH for word in family}
    for m in re.finditer(_alternation(families), text):
        sites.append(EditSite(m.start(), m.end(), "object", tuple(w for w in families[m.group()] if w != m.group())))
    return sites


def find_sites(text: str, language: str | None = None) -> list[EditSite]:
    """Non-overlapping edit sites of ``text`` in reading order (a longer site wins an overlap)."""
    found = _chinese_sites(text) if (language or detect_language(text)) == "zh" else _english_sites(text)
    kept: list[EditSite] = []
    for site in sorted(found, key=lambda s: (s.start, -(s.end - s.start))):
        if site.options and (not kept or site.start >= kept[-1].end):
            kept.append(site)
    return kept


def apply_edits(text: str, edits: list[tuple[EditSite, str]]) -> str:
    """Replace each site (right to left, so offsets hold); English "a"/"an" follow the new word."""
    for site, replacement in sorted(edits, key=lambda edit: -edit[0].start):
        before = text[:site.start]
        article = re.search(r"\b(a|an|A|An) $", before)
        if article:
            new = "an" if replacement[:1].lower() in "aeiou" else "a"
            new = new.capitalize() if article.group(1)[0].isupper() else new
            before = before[:article.start(1)] + new + " "
        text = before + replacement + text[site.end:]
    return text


def rule_negatives(caption: str, n: int, seed: int = 0, language: str | None = None,
                   exclude: frozenset[str] | set[str] = frozenset()) -> list[HardNegative]:
    """Up to ``n`` distinct negatives of ``caption``, each changing 2–3 sites (fewer if it has fewer).

    ``exclude`` holds ``text_key``s that must not come back (the source, negatives already made).
    """
    sites = find_sites(caption, language)
    rng = random.Random(seed)
    seen = {text_key(caption), *exclude}
    negatives: list[HardNegative] = []
    for _ in range(40 * n if sites else 0):
        chosen = rng.sample(sites, min(len(sites), rng.choice((2, 3))))
        text = apply_edits(caption, [(site, rng.choice(site.options)) for site in chosen])
        if text_key(text) in seen:
            continue
        seen.add(text_key(text))
        kinds = tuple(kind for kind in EDIT_KINDS if any(site.kind == kind for site in chosen))
        negatives.append(HardNegative(text, kinds, len(chosen), "rule"))
        if len(negatives) == n:
            break
    return negatives
