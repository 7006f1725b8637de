"""The identity check of a segmentation engine against jieba: edge-case texts, user dictionaries, a comparison.

    python benchmarks/segment.py --verify        # every mode x user dictionary on the shared data (>= 30 MB)
    pytest tests/test_engines.py                 # the same check on the fixtures and the edge cases

`edge_case_texts` generates what real corpora hold too rarely to trust a sample: Latin, digits and
punctuation glued to hanzi (`3.5mm`, `2019-2020`, `C++11`, `inside-out`), full-width forms, emoji,
every code point of the planes jieba and jieba-rs classify differently, repeated characters (exact
Viterbi ties), and very long lines. `EDGE_USERDICT` holds user-dictionary words with spaces,
digits, symbols and ASCII letters (some outweighed by their letters, so the route takes them
apart), one re-weighted dictionary word and one deleted word (frequency 0, which jieba turns into a
process-wide "force split" of what its HMM finds).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

from .segmenter import Segmenter, SegmenterSpec

MODES: tuple[tuple[Literal["accurate", "search"], bool], ...] = (
    ("accurate", True), ("accurate", False), ("search", True), ("search", False))
POLICIES = ("file", "multiply", "force")

EDGE_USERDICT: tuple[tuple[str, int | None], ...] = (
    ("糖类抗原19-9", None), ("*ST舜船", 5), ("喵窝智投", None), ("蓝鲸听书", 30), ("糖类 抗原", 10),
    ("iPhone15", 50), ("mp3", 200), ("ok", None), ("5G", 3000), ("a", 2), ("C++11", None), ("3.5mm", 80),
    ("中国", 3), ("小明", 20000), ("T恤衫", None), ("张小明", 0),
    ("x", 100000), ("y", 100000), ("xy", 1), ("xyz", 2),  # letters as words: `xy` is cut x|y unless forced
)

_HANZI = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种"
          "面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本"
          "去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比"
          "或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总"
          "次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做"
          "必战先回则任取据处理府研质")
_WORDS = ("手机", "电池", "质量", "快递", "酒店", "服务", "价格", "屏幕", "系统", "京东", "淘宝", "客服", "味道",
          "外卖", "书", "作者", "故事", "喜欢", "推荐", "一般", "不错", "很好", "太差", "赞", "哈哈", "呵呵")
_LATIN = ("iPhone", "iPhone15", "Wi-Fi", "C++", "C++11", "c#", "AT&T", "3.5mm", "0.2mm", "2019-2020", "10.4.5",
          "U.S.", "G.E.M", "50%", "1.5%", "inside-out", "mp3", "MP3", "ok", "OK", "pk", "5G", "4g", "x86_64",
          "a_b", "#tag", "&amp;", "T-T", "www.example.com", "v1.2.3-beta", "1-1-b%", "a%2-b", "2.2b", "100",
          "3", "a", "B", "12a.b", "xy", "xyz", "xyzzy", "--", "...", "%%", "+86", "iOS", "win10", "100+", "A股", "B超", "T恤", "X光")
_PUNCT = "，。！？、；：“”‘’（）【】《》…—·～,.!?;:'\"()[]<>/\\|@$^*=~`"
_FULLWIDTH = "ＡＢＣｘｙｚ０１２３４５６７８９！＂＃＄％＆＇（）＊＋，－．／：；＜＝＞？＠［＼］＾＿｀｛｜｝～"
_SPACES = (" ", "  ", "\t", "\u3000", "\xa0", "\r\n", "\r", "\u2028", "\x1c", "\u200b")
_EMOJI = ("😀", "👍", "👍🏻", "🇨🇳", "👨‍👩‍👧", "❤️", "🙏", "☺", "⭐")
# Characters jieba-rs counts as hanzi and jieba does not (CJK extension A, U+9FD6..U+9FFF,
# compatibility ideographs, extension B and later), and other scripts
_ODD = ("㐀㒵䶵", "鿖鿗鿫鿿", "豈更車", "𠀀𠀁𪚥𫝀𬺰", "γ射线", "한국어", "ひらがなカタカナ", "Привет", "ﷺ", "\x00\x01\x02",
        "é", "e\u0301", "\ufeff", "\ud800x")


@dataclass
class Agreement:
    """How `engine` cut `rows` texts compared with jieba; `examples` holds the first few differences."""

    engine: str
    rows: int = 0
    identical: int = 0
    examples: list[tuple[str, str, str]] = field(default_factory=list)  # (text, jieba line, engine line)

    @property
    def identical_pct(self) -> float:
        return 100.0 * self.identical / self.rows if self.rows else 100.0


def edge_case_texts(seed: int = 0, count: int = 3000, quick: bool = False) -> list[str]:
    """`count` mixed texts, code points, repeats and very long lines. `quick` (for the test suite):
    the code points at every class boundary plus a sample of the rest, and shorter long lines."""
    rng = random.Random(seed)
    pieces = [_WORDS, _LATIN, tuple(_PUNCT), tuple(_FULLWIDTH), _SPACES, _EMOJI, _ODD, tuple(_HANZI)]
    weights = (6, 4, 3, 1, 2, 1, 1, 6)
    texts = []
    for _ in range(count):
        n = rng.choice((1, 2, 3, 5, 8, 13, 30, 80))
        texts.append("".join(rng.choice(rng.choices(pieces, weights)[0]) for _ in range(n)))
    texts += _code_point_texts(rng, quick)
    texts += [c * n for c in "赞哈啊差好一" for n in (2, 3, 4, 5, 7, 12)]  # exact ties in the Viterbi
    texts += [f"第{a}{sep}{b}名" for a in ("3", "a", "1.5", "x1") for sep in "+#&_%-." for b in ("5", "b", "2.5")]
    texts += [word + tail for word, _ in EDGE_USERDICT for tail in ("", "了", "的价格是100元", " ")]
    scale = 10 if quick else 1
    long_line = "".join(rng.choice(texts[:count]) for _ in range(2000 // scale))
    texts += [long_line, "".join(rng.choice(_HANZI) for _ in range(20000 // scale)), "a1" * (5000 // scale),
              "中" + "-1" * (3000 // scale)]
    return texts


def _code_point_texts(rng: random.Random, quick: bool) -> list[str]:
    """Code points below U+30000 but the surrogates, 100 a text, each between two hanzi words: all of
    them, or (`quick`) 20 on each side of every edge of the classes jieba and jieba-rs use and 2,000 more."""
    every = [c for c in range(0x30000) if not 0xD800 <= c <= 0xDFFF]
    if quick:
        edges = (0x30, 0x41, 0x61, 0x80, 0x3000, 0x3400, 0x4DC0, 0x4E00, 0x9FD6, 0xA000, 0xF900, 0xFB00, 0xFF01,
                 0xFF5F, 0x10000, 0x20000, 0x2A6E0, 0x2B740, 0x2CEB0, 0x2EBF0, 0x2F800, 0x2FA20)
        near = {c for e in edges for c in range(e - 20, e + 20)}
        every = sorted((near | set(rng.sample(every, 2000))) - set(range(0xD800, 0xE000)))
    chars = [chr(c) for c in every]
    texts = []
    for i in range(0, len(chars), 100):
        window = chars[i:i + 100]
        texts.append("".join(rng.choice(_WORDS) + c for c in window) + rng.choice(_WORDS))
    return texts


def userdict_spec(policy: str, mode: str = "accurate", hmm: bool = True, engine: str = "rjieba") -> SegmenterSpec:
    """A spec with `EDGE_USERDICT` under frequency policy `policy`."""
    return SegmenterSpec(hmm=hmm, mode=mode, userdict=EDGE_USERDICT, policy=policy, multiplier=7.5,  # type: ignore[arg-type]
                         engine=engine)


def mode_pairs(base: SegmenterSpec) -> Iterator[tuple[str, Segmenter, Segmenter]]:
    """(label, engine segmenter, jieba segmenter) for every mode of `base`; the jieba tokenizer holding
    its dictionaries is built once and shared (building it is the slow part)."""
    tokenizer = Segmenter(replace(base, engine="jieba")).tokenizer
    for mode, hmm in MODES:
        spec = replace(base, mode=mode, hmm=hmm)
        label = f"{mode}, HMM {'on' if hmm else 'off'}"
        yield label, Segmenter(spec, tokenizer), Segmenter(replace(spec, engine="jieba"), tokenizer)


def compare(engine: Segmenter, reference: Segmenter, texts: Iterable[str], chunk_rows: int = 500,
            keep: int = 5) -> Agreement:
    """Cut `texts` with `engine` (chunk by chunk, as the segment stage does, and one text at a time, as
    predict does) and with `reference` (jieba); count the texts where all three agree."""
    result = Agreement(engine.engine.name)
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= chunk_rows:
            _compare_batch(engine, reference, batch, result, keep)
            batch = []
    if batch:
        _compare_batch(engine, reference, batch, result, keep)
    return result


def _compare_batch(engine: Segmenter, jieba: Segmenter, texts: list[str], result: Agreement, keep: int) -> None:
    chunked = engine.cut_lines(texts)
    for text, line in zip(texts, chunked):
        expected = " ".join(jieba.cut(text))
        result.rows += 1
        if line == expected == " ".join(engine.cut(text)):
            result.identical += 1
        elif len(result.examples) < keep:
            result.examples.append((text, expected, line))
