"""Tokenizer surgery for vocabulary expansion: new words a BERT (WordPiece) tokenizer really emits.

    tokenizer = load_tokenizer("runs/bert")
    planner = WordPlanner(tokenizer)
    planner.consider("机器学习")                         # -> "new", "existing", "activated" or a reason it is invalid
    expanded = write_expanded(tokenizer, planner, out)  # tokenizer.json + vocab.txt, reloaded and checked

Appending words to vocab.txt changes nothing: the Chinese BERT normalizer puts spaces around every
CJK character before WordPiece sees the text, so an entry "机器学习" can never match (docs/library-notes.md).
What survives that split:

- A word the pre-tokenizer keeps in one piece (a Latin word, a number, one character) only needs a
  WordPiece entry ("piece"). It is matched after normalisation, so case-insensitively under
  do_lower_case, and as the start of a piece like every English entry ("covid19" -> covid ##19).
- Every other word (Chinese words, mixed scripts, words with punctuation) becomes an added token
  ("added"): tokenizers' AddedVocabulary finds added tokens in the text before splitting,
  leftmost-longest (Aho-Corasick), so a word beats its own prefixes and suffixes and overlapping
  words resolve left to right, like greedy maximum matching.

Added tokens are matched in the normalised text (normalized=True), so "ABC公司", "abc公司" and
"Abc公司" are one token, as the tokenizer lower-cases (and strips accents) for every other word;
the token is the word's normalised form ("abc公司", in vocab.txt too). The BERT normalizer cannot
stay as it is for that: it also puts spaces around every CJK character, so a normalised-text match
would be named " 机  器 " (convert_tokens_to_ids(tokenize(text)) gives [UNK], decode() spaces it
out). The expanded tokenizer.json therefore splits those characters off in its pre-tokenizer
instead (a Split on the normalizer's own CJK ranges, then the BERT pre-tokenizer: the same pieces
and offsets for any text without a new word, as compare_tokenization checks on the corpus), the
normalizer's other steps unchanged. transformers 5 rebuilds BertTokenizer's normalizer and
pre-tokenizer from the class on load and keeps only the vocab and the added tokens, so such a
tokenizer is saved with tokenizer_class TokenizersBackend, which loads tokenizer.json as it is
(model_input_names keeps token_type_ids). All new words are of one kind (normalised added tokens):
non-normalised added tokens are extracted before normalised ones, and mixing them breaks longest match.

Every new word also goes into the WordPiece vocab at its id, so tokenizer.json and vocab.txt list it
after the old tokens (old ids keep their meaning; vocab.txt line = id, as `pretrain` checks).
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..checkpoints import loading
from ..core.errors import UserError
from ..core.files import VOCAB_TXT, read_vocab

log = logging.getLogger(__name__)

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# the code points tokenizers' BertNormalizer (handle_chinese_chars) puts spaces around, read off tokenizers 0.23
# (tests/test_expand.py checks them against it): the expanded pre-tokenizer splits them off instead
CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF), (0x2A700, 0x2B81F),
              (0x2B920, 0x2CEAF), (0x2F800, 0x2FA1F))
CJK_PATTERN = "[" + "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in CJK_RANGES) + "]"
Kind = Literal["piece", "added"]


@dataclass(frozen=True)
class NewWord:
    word: str  # as given
    token: str  # its vocabulary entry: the normalised piece ("piece") or the normalised word ("added")
    kind: Kind
    pieces: tuple[int, ...]  # ids the original tokenizer gives the word: what its embedding starts from


@dataclass
class WordPlanner:
    """Sorts candidate words into new, existing (already one token), activated (in the vocab but
    never emitted, e.g. appended to vocab.txt by hand) and invalid (with the reason)."""

    tokenizer: Any
    new: list[NewWord] = field(default_factory=list)
    existing: dict[str, int] = field(default_factory=dict)
    activated: dict[str, int] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._model = wordpiece_model(self.tokenizer)
        self._normalizer = added_normalizer(self.tokenizer)
        self._vocab = self.tokenizer.get_vocab()
        self._tokens: dict[str, str] = {}  # new token -> the word that brought it

    def consider(self, word: str) -> str:
        """Classify one word: 'new', 'existing', 'activated', 'duplicate' or the reason it is invalid."""
        tok = self.tokenizer
        if word in self.existing or word in self.activated or word in self.invalid:
            return "duplicate"
        reason = self._invalid(word)
        if reason:
            self.invalid[word] = reason
            return reason
        ids = tok(word, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] != tok.unk_token_id:
            self.existing[word] = ids[0]
            return "existing"
        if word in self._vocab:
            self.activated[word] = self._vocab[word]
            return "activated"
        pieces = pre_tokenize(tok, word)
        kind: Kind = "piece" if len(pieces) == 1 else "added"
        token = pieces[0] if kind == "piece" else self._normalizer.normalize_str(word) if self._normalizer else word
        if not token or any(ch.isspace() for ch in token):
            self.invalid[word] = f"normalises to {token!r}"
            return self.invalid[word]
        if token in self._tokens:  # "COVID" after "covid", "abc公司" after "ABC公司": one token, already planned
            return "duplicate"
        self._tokens[token] = word
        self.new.append(NewWord(word, token, kind, tuple(ids)))
        return "new"

    def _invalid(self, word: str) -> str:
        if not word or any(ch.isspace() for ch in word):
            return "contains whitespace (vocab.txt holds one token a line)"
        if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in word):
            return "contains a control character"
        prefix = self._model.get("continuing_subword_prefix") or "##"
        if word.startswith(prefix):
            return f"starts with the word-piece prefix {prefix}"
        limit = self._model.get("max_input_chars_per_word") or 100
        if len(word) > limit:
            return f"longer than {limit} characters (WordPiece's limit)"
        return ""


def load_tokenizer(path: Path) -> Any:
    """The checkpoint's tokenizer, which must be a fast WordPiece (BERT-style) tokenizer."""
    tokenizer = loading.load_tokenizer(path)
    wordpiece_model(tokenizer, path)
    return tokenizer


def wordpiece_model(tokenizer: Any, where: Path | str = "the tokenizer") -> dict[str, Any]:
    """The `model` section of the tokenizer's tokenizer.json; a UserError unless it is WordPiece."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = json.loads(backend.to_str())["model"] if backend is not None else {}
    if model.get("type") != "WordPiece":
        raise UserError(f"{where}: expand grows BERT-style WordPiece tokenizers; this one is "
                        f"{model.get('type') or type(tokenizer).__name__}")
    return model


def _cjk_spacing(tokenizer: Any) -> dict[str, Any] | None:
    """The tokenizer's normalizer spec when it is the BERT normalizer that spaces out CJK characters."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("normalizer") or {}
    return spec if spec.get("type") == "BertNormalizer" and spec.get("handle_chinese_chars") else None


def added_normalizer(tokenizer: Any) -> Any:
    """The normalizer the expanded tokenizer matches added words with: the tokenizer's own, less the BERT
    normalizer's spaces around CJK characters (its pre-tokenizer splits them off instead)."""
    from tokenizers import normalizers

    spec = _cjk_spacing(tokenizer)
    if spec is None:
        return tokenizer.backend_tokenizer.normalizer
    return normalizers.BertNormalizer(clean_text=spec["clean_text"], handle_chinese_chars=False,
                                      strip_accents=spec["strip_accents"], lowercase=spec["lowercase"])


def pre_tokenize(tokenizer: Any, text: str) -> list[str]:
    """The pieces WordPiece would see: the tokenizer's normalizer, then its pre-tokenizer."""
    backend = tokenizer.backend_tokenizer
    normalized = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
    if backend.pre_tokenizer is None:
        return [normalized] if normalized else []
    return [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(normalized)]


def write_expanded(tokenizer: Any, planner: WordPlanner, out: Path, old_vocab_txt: Path | None = None) -> Any:
    """Save `tokenizer` grown by the planner's new and activated words into `out`; returns it reloaded.
    vocab.txt starts with `old_vocab_txt`'s lines when it has one per old token (byte-for-byte the old
    file: HF loaders strip tokens such as Google's U+2028 to ''), else with the tokenizer's own table."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers

    tokenizer.save_pretrained(str(out))
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    size = len(tokenizer)
    vocab = data["model"]["vocab"]
    for i, token in _id_table(data, size).items():  # old added tokens outside the vocab get their line too
        vocab.setdefault(token, i)
    for offset, new in enumerate(planner.new):
        vocab[new.token] = size + offset
        if new.kind == "added":
            data["added_tokens"].append(_added_token(size + offset, new.token))
    for word, token_id in planner.activated.items():
        data["added_tokens"].append(_added_token(token_id, word))
    backend = Tokenizer.from_str(json.dumps(data, ensure_ascii=False))
    if _cjk_spacing(tokenizer) is not None and (planner.activated or any(w.kind == "added" for w in planner.new)):
        backend.normalizer = added_normalizer(tokenizer)
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(CJK_PATTERN), "isolated"),
                                                         backend.pre_tokenizer])
        config = json.loads((out / TOKENIZER_CONFIG).read_text(encoding="utf-8"))
        config.update(tokenizer_class="TokenizersBackend", model_input_names=list(tokenizer.model_input_names))
        (out / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    backend.save(str(out / TOKENIZER_JSON))
    tokens = sorted(vocab, key=vocab.__getitem__)
    old_lines = read_vocab(old_vocab_txt) if old_vocab_txt is not None and old_vocab_txt.is_file() else []
    if len(old_lines) == size:
        tokens[:size] = old_lines
    (out / VOCAB_TXT).write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    expanded = load_tokenizer(out)
    _check(tokenizer, expanded, planner, out)
    return expanded


def _added_token(token_id: int, content: str) -> dict[str, Any]:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": True, "special": False}


def _id_table(data: dict[str, Any], size: int) -> dict[int, str]:
    table = {i: t for t, i in data["model"]["vocab"].items()}
    table.update({t["id"]: t["content"] for t in data["added_tokens"]})
    if sorted(table) != list(range(size)):
        missing = sorted(set(range(size)) - set(table))[:5]
        raise UserError(f"the tokenizer's ids are not 0..{size - 1} without gaps (missing e.g. {missing}); "
                        "expand cannot place new words after them")
    return table


def _check(old: Any, new: Any, planner: WordPlanner, out: Path) -> None:
    """The saved tokenizer has every old token at its old id and emits each new word as its own token."""
    size = len(old)
    if len(new) != size + len(planner.new):
        raise RuntimeError(f"expanded tokenizer has {len(new)} tokens, expected {size} + {len(planner.new)}")
    lines = read_vocab(out / VOCAB_TXT)
    if len(lines) != len(new):
        raise RuntimeError(f"vocab.txt has {len(lines)} lines for {len(new)} tokens")
    new_vocab = new.get_vocab()
    moved = [t for t, i in old.get_vocab().items() if new_vocab.get(t) != i]
    if moved:
        raise RuntimeError(f"old tokens changed ids: {moved[:5]}")
    expected = {w.word: size + i for i, w in enumerate(planner.new)} | planner.activated
    for word, token_id in expected.items():
        ids = new(word, add_special_tokens=False)["input_ids"]
        name = new.convert_ids_to_tokens(token_id)  # also what tokenize() calls it: " 机  器 " would give [UNK]
        if ids != [token_id] or lines[token_id] != name or new.tokenize(word) != [name]:
            raise RuntimeError(f"new word {word!r} encodes to {ids}, expected [{token_id}]")


class WordMatcher:
    """Does a text contain any of the new words, as the expanded tokenizer would see it?"""

    def __init__(self, tokenizer: Any, words: Iterable[NewWord]) -> None:
        self.normalizer = tokenizer.backend_tokenizer.normalizer
        self.tokens = {w.token for w in words}  # added words and pieces, both matched in the normalised text
        self._lengths = sorted({len(t) for t in self.tokens})

    def contains(self, text: str) -> bool:
        normalized = self.normalizer.normalize_str(text) if self.normalizer is not None else text
        return any(normalized[i:i + n] in self.tokens for n in self._lengths for i in range(len(normalized) - n + 1))


def compare_tokenization(old: Any, new: Any, texts: list[str], words: list[NewWord]) -> dict[str, Any]:
    """Tokens per text before and after, and proof that texts without new words tokenise as before."""
    if not texts:
        return {}
    before = old(texts, add_special_tokens=False)["input_ids"]
    after = new(texts, add_special_tokens=False)["input_ids"]
    matcher = WordMatcher(new, words)
    plain = [i for i, text in enumerate(texts) if not matcher.contains(text)]
    changed = [texts[i] for i in plain if before[i] != after[i]]
    if changed:
        raise RuntimeError(f"{len(changed)} texts without new words tokenise differently, e.g. {changed[0][:80]!r}")
    n_before, n_after = sum(map(len, before)), sum(map(len, after))
    return {"texts_measured": len(texts), "tokens_per_text_before": round(n_before / len(texts), 3),
            "tokens_per_text_after": round(n_after / len(texts), 3),
            "token_reduction": round(1 - n_after / n_before, 4) if n_before else 0.0,
            "texts_without_new_words_unchanged": len(plain)}
