"""jieba 0.42.1's whole cut compiled with numba: its dictionary route, HMM and search n-grams, exactly.

    CompiledJieba(JiebaTrie.default(), hmm=True, search=False).words(text) == jieba.lcut(text)

The rjieba adapter (`text.engines.RjiebaEngine`) spends two thirds of its time in rjieba's route
call, most of it making one Python string per token (2.24 M tokens for 10 MB of text), and needs
repairs where jieba-rs differs (ASCII steps merged, odd characters, near-ties left to jieba). Here
jieba's own algorithm runs on code points from start to end, no token ever becomes a Python object,
and nothing is repaired because nothing differs:

- jieba's `FREQ` (every dictionary word and every prefix of one) is a trie of code points: each
  node's children consecutive and sorted, the root's in a table by code point, and a 1 MB bit
  filter of all edges that answers most failed steps without touching the trie. A node is "in
  FREQ"; it is a DAG edge when its frequency is above 0. No library holds a trie numba can walk
  (jieba-rs' double-array trie is not reachable from Python), hence this one.
- The route is `Tokenizer.calc` right to left over each block of `re_han_default` characters,
  adding as jieba does, `(log(freq) - log(total)) + route[x + 1]` (the logarithms are Python's
  `math.log`, computed once per distinct frequency), ties to the later end as `max((prob, x))`.
- With the HMM on, runs of single-character steps are buffers, cut by `text.hmm.hmm_words` (jieba's
  `finalseg`, compiled) unless the buffer is itself a word; with it off, ASCII letter/digit steps
  are joined (`__cut_DAG_NO_HMM`). Outside blocks every character is a token, `\\r\\n` one token.
- Search mode adds each word's dictionary 2- and 3-grams before it (`cut_for_search`).

Words go into one code-point array with a separator no text can hold (0x110000, past Unicode);
a chunk of texts is cut in one call, and the segment stage's lines come out with one decode.
"""

from __future__ import annotations

import codecs
import functools
import math
from pathlib import Path

import jieba
import numpy as np
from numba import njit

from . import hmm as jieba_hmm

_WORD_END = 0x110000  # past the last code point: ends a word (or, in lines, a text)
_SPACE_CODE = 32
# root children, child bounds, code points, weights, word flags, edge filter (`_packed` says which is which)
TrieArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class JiebaTrie:
    """jieba's FREQ as a trie numba walks (`arrays`), each node with its DAG weight and whether it is a word."""

    def __init__(self, codes: np.ndarray, starts: np.ndarray, ends: np.ndarray, freqs: np.ndarray, total: int) -> None:
        """Keys codes[starts[i]:ends[i]] with frequency freqs[i] (a later duplicate wins, as in jieba's
        loading); `total` is jieba's (every loaded line and every `add_word` counted)."""
        log_total = math.log(total)
        distinct, position = np.unique(freqs, return_inverse=True)
        # Python's math.log, as jieba's calc takes it; one call per distinct frequency
        logs = np.array([math.log(f) if f > 0 else 0.0 for f in distinct.tolist()])
        weights = logs[position] - log_total
        keys = int(np.sum(ends - starts)) + 1  # at most one node a key character
        parent, label, weight, known = _build(codes, starts, ends, np.asarray(freqs > 0, np.bool_), weights,
                                              max(4, (2 * keys).bit_length()))
        self.arrays = _packed(parent, label, weight, known)
        self.neg_log_total = 0.0 - log_total  # `log(FREQ.get(char) or 1) - logtotal` for a step off the dictionary

    @classmethod
    def of_tokenizer(cls, tokenizer: jieba.Tokenizer) -> JiebaTrie:
        """The dictionary a jieba tokenizer holds now (its dictionary file, user words, deletions)."""
        tokenizer.check_initialized()
        keys = list(tokenizer.FREQ)
        lengths = np.fromiter(map(len, keys), np.int64, len(keys))
        ends = np.cumsum(lengths)
        values = list(tokenizer.FREQ.values())
        # jieba takes any whole number; past int64 (a user's 10**19, or a big --userdict-multiplier) as Python ints
        freqs = np.array(values, np.int64 if max(values, default=0) < 2**62 else object)
        return cls(_codes("".join(keys)), ends - lengths, ends, freqs, tokenizer.total)

    @classmethod
    def of_dict_txt(cls, path: Path) -> JiebaTrie:
        """A dictionary file read as jieba's `gen_pfdict` reads it: `word freq [tag]` a line."""
        codes = _codes(path.read_text(encoding="utf-8"))
        starts, ends, freqs = _parse_dict(codes)
        return cls(codes, starts, ends, freqs, int(freqs.sum()))


@functools.cache
def default_trie() -> JiebaTrie:
    """jieba's bundled dictionary, built once a process (about 0.1 s): what a spec without
    dictionaries cuts with; nothing changes it after it is built."""
    return JiebaTrie.of_dict_txt(Path(jieba.__file__).resolve().parent / jieba.DEFAULT_DICT_NAME)


class CompiledJieba:
    """jieba's cut (accurate or search mode, HMM on or off) on `trie`, a chunk of texts a call."""

    name = "compiled"

    def __init__(self, trie: JiebaTrie, hmm: bool, search: bool, force_split: frozenset[str] = frozenset()) -> None:
        self._trie, self._hmm, self._search = trie, hmm, search
        self._split = jieba_hmm.force_split(force_split)
        self.lines(["中文"])  # compiles (or loads) the machine code now, before workers fork

    def words(self, text: str) -> list[str]:
        return self._cut([text], lines=False)

    def lines(self, texts: list[str]) -> list[str]:
        """Each text's words joined by spaces, whitespace tokens dropped (the segment stage's lines)."""
        return self._cut(texts, lines=True)

    def utf8_columns(self, texts: list[str]) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
        """The segment stage's chunk without a Python string per line or word: (the lines as UTF-8,
        each ending in \\n; the words' UTF-8 bytes back to back, each word's end in them, each line's
        end in the words). A line without words holds one empty word, as splitting "" on " " gives."""
        out, ends = self._words(texts, lines=True)
        if np.any((out >= 0xD800) & (out <= 0xDFFF)):  # a lone surrogate has no UTF-8: raise as str.encode does
            "".join(texts).encode("utf-8")
        corpus, data, word_ends, line_ends = _utf8_columns(out, ends)
        return corpus.tobytes(), data, word_ends, line_ends

    def _cut(self, texts: list[str], lines: bool) -> list[str]:
        out, ends = self._words(texts, lines)
        if not lines:  # one text: its words are the pieces between separators
            out, ends = _split_words(out)
        joined = codecs.utf_32_le_decode(out.data, "surrogatepass")[0]
        starts = [0, *ends[:-1].tolist()]
        return [joined[a:b] for a, b in zip(starts, ends.tolist())]

    def _words(self, texts: list[str], lines: bool) -> tuple[np.ndarray, np.ndarray]:
        """(the words as code points joined by spaces, or by _WORD_END for one text's `words`; each text's end)."""
        codes = _codes("".join(texts))
        text_ends = np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)))
        t = self._trie
        sep = np.uint32(_SPACE_CODE if lines else _WORD_END)
        out, ends = _cut(codes, text_ends, *t.arrays, t.neg_log_total, self._hmm, lines, sep, jieba_hmm.EMIT, jieba_hmm.MODEL,
                         jieba_hmm.SPACE, *self._split)
        if self._search:
            out, ends = _with_grams(out, ends, sep, *t.arrays)
        return out, ends


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)


@njit(cache=True)
def _parse_dict(codes):
    """(start, end, frequency) of each line's word: up to its first space, then its decimal frequency
    (jieba's `line.strip().split(' ')[:2]`; blank lines skipped)."""
    n = len(codes)
    starts = np.empty(n // 2 + 1, np.int64)
    ends = np.empty(n // 2 + 1, np.int64)
    freqs = np.empty(n // 2 + 1, np.int64)
    words = 0
    i = 0
    while i < n:
        while i < n and (codes[i] == 10 or codes[i] == 13 or codes[i] == 32 or codes[i] == 0xFEFF):
            i += 1
        if i == n:
            break
        start = i
        while i < n and codes[i] != 32 and codes[i] != 10 and codes[i] != 13:
            i += 1
        end = i
        i += 1
        freq = 0
        while i < n and 48 <= codes[i] <= 57:
            freq = freq * 10 + (codes[i] - 48)
            i += 1
        while i < n and codes[i] != 10:
            i += 1
        starts[words], ends[words], freqs[words] = start, end, freq
        words += 1
    return starts[:words], ends[:words], freqs[:words]


@njit(cache=True)
def _slot(keys, key):
    """The slot holding `key`, or the empty one where it would go (linear probing)."""
    mask = len(keys) - 1
    h = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing, its high bits folded down
    slot = np.int64((h ^ (h >> np.uint64(32))) & np.uint64(mask))
    while keys[slot] != -1 and keys[slot] != key:
        slot = (slot + 1) & mask
    return slot


@njit(cache=True)
def _build(codes, starts, ends, positive, weights, bits):
    """The trie's nodes (node 0 the root) as each one's parent and last code point, through a hash
    table (parent, code point) -> node that is dropped afterwards."""
    keys = np.full(1 << bits, -1, np.int64)
    nodes = np.zeros(1 << bits, np.int32)
    size = 1 << (bits - 1)
    parent = np.full(size, -1, np.int32)
    label = np.zeros(size, np.uint32)
    weight = np.zeros(size, np.float64)
    known = np.zeros(size, np.bool_)
    count = 1
    for k in range(len(starts)):
        node = 0
        for i in range(starts[k], ends[k]):
            key = (np.int64(node) << 21) | np.int64(codes[i])
            slot = _slot(keys, key)
            if keys[slot] == -1:
                keys[slot], nodes[slot] = key, count
                parent[count], label[count] = node, codes[i]
                count += 1
            node = nodes[slot]
        weight[node] = weights[k]
        known[node] = positive[k]
    return parent[:count], label[:count], weight[:count], known[:count]


def _packed(parent: np.ndarray, label: np.ndarray, weight: np.ndarray, known: np.ndarray) -> TrieArrays:
    """The trie renumbered so that every node's children are consecutive, sorted by code point:
    (the root's child for each code point below 0x10000, each node's [first, end) child, each node's
    code point, weight and word flag). A walk then reads a few neighbouring entries a step (a hash
    table of 500k edges missed the cache on nearly every step: cutting 10 MB took 0.59 s with it, 0.51 so)."""
    order = np.lexsort((label, parent))  # the root (parent -1) first, then by parent and code point
    renumber = np.empty(len(order), np.int32)
    renumber[order] = np.arange(len(order), dtype=np.int32)
    by_parent = parent[order]
    bounds = np.empty((len(order), 2), np.int32)
    bounds[renumber, 0] = np.searchsorted(by_parent, np.arange(len(order)), "left")
    bounds[renumber, 1] = np.searchsorted(by_parent, np.arange(len(order)), "right")
    labels = label[order]
    root = np.full(0x10000, -1, np.int32)
    first, end = bounds[0]
    bmp = labels[first:end] < 0x10000
    root[labels[first:end][bmp]] = np.arange(first, end, dtype=np.int32)[bmp]
    edges = _edge_filter(renumber[parent[1:]], label[1:])
    return root, bounds, labels, weight[order], known[order], edges


_FILTER_BITS = 23  # 1 MB: stays in a core's L2 cache beside the hot part of the trie


@njit(cache=True)
def _edge_bit(node, code):
    h = np.uint64((np.int64(node) << 21) | np.int64(code)) * np.uint64(0x9E3779B97F4A7C15)
    return np.int64(h >> np.uint64(64 - _FILTER_BITS))


@njit(cache=True)
def _edge_filter(parents, codes):
    """A bit for every edge (parent, code point), hashed: most steps of a walk find no child, and
    this answers them from the cache instead of a search in the trie."""
    bits = np.zeros(1 << (_FILTER_BITS - 3), np.uint8)
    for i in range(len(parents)):
        b = _edge_bit(parents[i], codes[i])
        bits[b >> 3] |= np.uint8(1 << (b & 7))
    return bits


@njit(cache=True)
def _child(root, bounds, labels, edges, node, code):
    """The child of `node` along `code`, -1 if none. Its steps are written out in `_route`'s loop, the
    one hot path: calling `_child` there (numba's inlining too) made the walk take 2.2x as long."""
    if node == 0 and code < 0x10000:
        return root[code]
    b = _edge_bit(node, code)
    if not edges[b >> 3] & (1 << (b & 7)):
        return -1
    return _search(bounds, labels, node, code)


@njit(cache=True)
def _search(bounds, labels, node, code):
    lo, hi = bounds[node, 0], bounds[node, 1]
    while hi - lo > 8:
        mid = (lo + hi) >> 1
        if labels[mid] < code:
            lo = mid + 1
        else:
            hi = mid + 1
    for i in range(lo, hi):
        if labels[i] >= code:
            return i if labels[i] == code else -1
    return -1


@njit(cache=True)
def _is_word(root, bounds, tlabels, weight, known, edges, codes, start, end):
    """`FREQ.get(codes[start:end])` above 0?"""
    node = 0
    for i in range(start, end):
        node = _child(root, bounds, tlabels, edges, node, codes[i])
        if node < 0:
            return False
    return known[node]


@njit(cache=True)
def _put(out, used, line, sep, source, start, end):
    """Append the word source[start:end], after `sep` unless it is the first since `line`."""
    if used > line:
        out[used] = sep
        used += 1
    for i in range(start, end):
        out[used] = source[i]
        used += 1
    return used


@njit(cache=True)
def _route(codes, start, end, root, bounds, tlabels, weight, known, edges, neg_log_total, value, step_end):
    """jieba's `calc` over the block codes[start:end]: step_end[i] = the last character of the word the
    best route takes at i."""
    value[end] = 0.0
    for i in range(end - 1, start - 1, -1):
        best = -1
        best_value = 0.0
        c = codes[i]
        node = root[c] if c < 0x10000 else _search(bounds, tlabels, 0, c)
        j = i
        while node >= 0:
            if known[node]:
                v = weight[node] + value[j + 1]
                if best < 0 or v >= best_value:  # equal: the later end, as max((prob, x)) picks
                    best, best_value = j, v
            j += 1
            if j == end:
                break
            c = codes[j]
            b = _edge_bit(node, c)
            if not edges[b >> 3] & (1 << (b & 7)):
                break
            node = _search(bounds, tlabels, node, c)
        if best < 0:  # no word starts here: the character alone, frequency 1
            best, best_value = i, neg_log_total + value[i + 1]
        value[i] = best_value
        step_end[i] = best


@njit(cache=True)
def _buffer(out, used, line, sep, codes, start, end, root, bounds, tlabels, weight, known, edges, emit, model, chars,
            back, labels, split_hashes, split_codes, split_starts, split_ends):
    """`__cut_DAG`'s buffer codes[start:end] of two or more characters: a dictionary word character by
    character, anything else through finalseg's HMM."""
    if _is_word(root, bounds, tlabels, weight, known, edges, codes, start, end):
        for i in range(start, end):
            used = _put(out, used, line, sep, codes, i, i + 1)
        return used
    for i in range(start, end):
        chars[i - start] = codes[i]
    return jieba_hmm.hmm_words(out, used, used > line, sep, chars, end - start, emit, model, back, labels, split_hashes,
                         split_codes, split_starts, split_ends)


@njit(cache=True)
def _block(out, used, line, sep, codes, start, end, root, bounds, tlabels, weight, known, edges, neg_log_total,
           use_hmm, value, step_end, emit, model, chars, back, labels, split_hashes, split_codes, split_starts,
           split_ends):
    """`__cut_DAG` (HMM on) or `__cut_DAG_NO_HMM` on the block codes[start:end]."""
    _route(codes, start, end, root, bounds, tlabels, weight, known, edges, neg_log_total, value, step_end)
    buffered = -1  # where the pending run of single-character steps starts
    i = start
    while i <= end:
        stop = step_end[i] + 1 if i < end else end + 1
        if i < end and stop - i == 1 and (use_hmm or jieba_hmm.alnum(codes[i])):
            if buffered < 0:
                buffered = i
        else:
            if buffered >= 0:
                if use_hmm and i - buffered > 1:
                    used = _buffer(out, used, line, sep, codes, buffered, i, root, bounds, tlabels, weight, known,
                                   edges, emit, model, chars, back, labels, split_hashes, split_codes, split_starts,
                                   split_ends)
                else:  # one character, or HMM off: the letters and digits joined
                    used = _put(out, used, line, sep, codes, buffered, i)
                buffered = -1
            if i < end:
                used = _put(out, used, line, sep, codes, i, stop)
        i = stop
    return used


@njit(cache=True)
def _cut(codes, text_ends, root, bounds, tlabels, weight, known, edges, neg_log_total, use_hmm, lines, sep, emit,
         model, space, split_hashes, split_codes, split_starts, split_ends):
    """(the words of every text, joined by `sep`, each text's end in them); `lines`: whitespace
    tokens dropped."""
    n = len(codes)
    out = np.empty(2 * n + 1, np.uint32)
    ends = np.empty(len(text_ends), np.int64)
    value = np.empty(n + 1, np.float64)
    step_end = np.empty(n + 1, np.int64)
    chars = np.empty(n + 1, np.uint32)
    back = np.empty(n + 1, np.uint8)
    labels = np.empty(n + 1, np.uint8)
    used = 0
    start = 0
    for t in range(len(text_ends)):
        end = text_ends[t]
        line = used
        i = start
        while i < end:
            c = codes[i]
            if jieba_hmm.in_block(c):
                stop = i + 1
                while stop < end and jieba_hmm.in_block(codes[stop]):
                    stop += 1
                used = _block(out, used, line, sep, codes, i, stop, root, bounds, tlabels, weight, known, edges,
                              neg_log_total, use_hmm, value, step_end, emit, model, chars, back, labels, split_hashes,
                              split_codes, split_starts, split_ends)
            else:  # re_skip_default: \r\n or one whitespace character, else one character a token
                stop = i + 2 if c == 13 and i + 1 < end and codes[i + 1] == 10 else i + 1
                if not (lines and c < len(space) and space[c]):
                    used = _put(out, used, line, sep, codes, i, stop)
            i = stop
        ends[t] = used
        start = end
    return out[:used], ends


@njit(cache=True)
def _with_grams(out, ends, sep, root, bounds, tlabels, weight, known, edges):
    """`cut_for_search`: before each word longer than 2 (3), its dictionary 2-grams (3-grams)."""
    grown = np.empty(8 * len(out) + 1, np.uint32)
    grown_ends = np.empty(len(ends), np.int64)
    used = start = 0
    for t in range(len(ends)):
        line = used
        while start < ends[t]:
            stop = start
            while stop < ends[t] and out[stop] != sep:
                stop += 1
            n = stop - start
            for size in (2, 3):
                if n > size:
                    for a in range(start, stop - size + 1):
                        if _is_word(root, bounds, tlabels, weight, known, edges, out, a, a + size):
                            used = _put(grown, used, line, sep, out, a, a + size)
            used = _put(grown, used, line, sep, out, start, stop)
            start = stop + 1
        grown_ends[t] = used
        start = ends[t]
    return grown[:used], grown_ends


@njit(cache=True)
def _split_words(out):
    """(the code points without separators, the end of each word)."""
    clean = np.empty(len(out), np.uint32)
    ends = np.empty(len(out) + 1, np.int64)
    used = words = 0
    for i in range(len(out)):
        if out[i] == _WORD_END:
            ends[words] = used
            words += 1
        else:
            clean[used] = out[i]
            used += 1
    if len(out):
        ends[words] = used
        words += 1
    return clean[:used], ends[:words]


@njit(cache=True)
def _utf8(out, used, code):
    if code < 0x80:
        out[used] = code
        return used + 1
    if code < 0x800:
        out[used], out[used + 1] = 0xC0 | (code >> 6), 0x80 | (code & 0x3F)
        return used + 2
    if code < 0x10000:  # never a lone surrogate: utf8_columns refuses those first
        out[used], out[used + 1], out[used + 2] = 0xE0 | (code >> 12), 0x80 | ((code >> 6) & 0x3F), 0x80 | (code & 0x3F)
        return used + 3
    out[used], out[used + 1] = 0xF0 | (code >> 18), 0x80 | ((code >> 12) & 0x3F)
    out[used + 2], out[used + 3] = 0x80 | ((code >> 6) & 0x3F), 0x80 | (code & 0x3F)
    return used + 4


@njit(cache=True)
def _utf8_columns(out, ends):
    """`utf8_columns` from the space-joined lines `out` and each line's end in it."""
    corpus = np.empty(4 * len(out) + len(ends), np.uint8)
    data = np.empty(4 * len(out), np.uint8)
    word_ends = np.zeros(len(out) + len(ends) + 1, np.int32)
    line_ends = np.zeros(len(ends) + 1, np.int32)
    used = stored = words = start = 0
    for t in range(len(ends)):
        for i in range(start, ends[t]):
            c = out[i]
            used = _utf8(corpus, used, c)
            if c == _SPACE_CODE:  # a word ends (words never hold a space)
                words += 1
                word_ends[words] = stored
            else:
                stored = _utf8(data, stored, c)
        words += 1  # the line's last word, or the empty word of a line without any
        word_ends[words] = stored
        line_ends[t + 1] = words
        corpus[used] = 10
        used += 1
        start = ends[t]
    return corpus[:used], data[:stored], word_ends[:words + 1], line_ends
