"""jieba's HMM step on rjieba's route, compiled with numba: jieba 0.42.1's words, at rjieba's speed.

    cut("\\x01".join(rjieba_tokens_hmm_off), hmm=True, is_word=rjieba.has_word, lines=False)
        == "\\x01".join(jieba's words)           # what text.engines.RjiebaEngine builds on

With the HMM on, jieba sends every run of two or more single-character route steps that is not
itself a dictionary word (a "buffer") to `finalseg.cut`: the hanzi in it are cut by a 4-state
Viterbi, the rest by `re_skip` (`[a-zA-Z0-9]+(?:\\.\\d+)?%?`). jieba-rs has its own HMM, but with
the emission log-probabilities rounded to 6 decimals (which flips near-ties: 9 of 202,402 real
lines) and a different split of non-hanzi text, so this module does the step itself, on jieba's
own tables, adding in jieba's order `(V[t-1][y0] + trans[y0][y]) + emit[y]` and breaking exact
ties as jieba's `max((prob, state))` does (the later state letter wins). numba compiles it
without fast-math, so every sum and comparison is the IEEE double jieba computes.

Why compiled: done in Python, the buffers, the regex that finds them and the string handling
around them cost more than rjieba's route itself (rjieba with this step was 7x jieba, rjieba alone
22x). Here one pass over the route (the tokens joined by \\x01, as UTF-32 code points) finds the
runs of steps, Python asks rjieba once per run whether its buffer is a dictionary word, and a
second pass writes the words out, joined by \\x01, or (`lines`) as the segment stage's lines:
words joined by spaces, whitespace tokens dropped, texts (joined by \\x00) split at \\x00. No
library cuts jieba's HMM exactly; the functions are plain Python that numba compiles once
(`cache=True`: later processes load the machine code from __pycache__ in about 0.1 s).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

import numpy as np
from jieba import finalseg
from numba import njit

_FIRST, _LAST = 0x4E00, 0x9FD5  # finalseg.re_han: the characters its Viterbi cuts
_SEP, _MARK = 1, 2  # \x01 separates route tokens; \x02 starts an ASCII token that is one route step
_B, _E, _M, _S = 0, 1, 2, 3


def _model() -> tuple[np.ndarray, np.ndarray]:
    """jieba's emission table (hanzi x BEMS; jieba's MIN_FLOAT where a state never emitted the
    character) and [start B, E, M, S, then the 8 transitions the Viterbi uses]."""
    emit = np.full((_LAST - _FIRST + 1, 4), finalseg.MIN_FLOAT)
    for column, state in enumerate("BEMS"):
        for char, logp in finalseg.emit_P[state].items():
            if _FIRST <= ord(char) <= _LAST:
                emit[ord(char) - _FIRST, column] = logp
    t = finalseg.trans_P
    model = [finalseg.start_P[s] for s in "BEMS"] + [t["E"]["B"], t["S"]["B"], t["B"]["E"], t["M"]["E"],
                                                      t["B"]["M"], t["M"]["M"], t["E"]["S"], t["S"]["S"]]
    return emit, np.array(model)


EMIT, MODEL = _model()
# str.isspace (= re's \s) of the code points up to U+3000, the last whitespace character
SPACE = np.array([chr(c).isspace() for c in range(0x3001)])
_NO_WORDS = np.zeros(0, np.bool_)
_NO_SPANS = np.zeros(0, np.int64)
_NO_CODES = np.zeros(0, np.uint32)
_NO_HASHES = np.zeros(0, np.uint64)
ForceSplit = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
_force_split_cache: dict[frozenset[str], ForceSplit] = {}


def cut(joined: str, hmm: bool, is_word: Callable[[str], bool], lines: bool, split: ForceSplit) -> str:
    """jieba's words for rjieba's HMM-off route `joined` (tokens joined by \\x01, none empty, an ASCII
    token that is one route step marked with a leading \\x02), joined by \\x01; `lines`: joined by
    spaces, without whitespace tokens, and a \\x00 token (between two texts) a bare \\x00.
    `hmm` False only formats: the tokens are already the words."""
    codes = np.frombuffer(joined.encode("utf-32-le"), np.uint32)
    starts, ends, words = _NO_SPANS, _NO_SPANS, _NO_WORDS
    if hmm:
        starts, ends, buffers = _runs(codes)
        if len(starts):
            # a buffer that is itself a dictionary word stays single characters (jieba's `FREQ.get(buf)`)
            words = np.array(list(map(is_word, _text(buffers).split("\x01"))), np.bool_)
    split_hashes, split_codes, split_starts, split_ends = split
    out = _render(codes, starts, ends, words, EMIT, MODEL, SPACE, split_hashes, split_codes, split_starts,
                  split_ends, lines)
    return _text(out)


def long_words(joined: str, sep: str) -> list[int]:
    """[start, end, start, end, ...] of the words of three or more characters in `joined`, words joined
    by `sep` or \\x00 (where search mode adds n-grams)."""
    return _long_words(np.frombuffer(joined.encode("utf-32-le"), np.uint32), ord(sep)).tolist()


def _text(codes: np.ndarray) -> str:
    return codecs.utf_32_le_decode(codes.data)[0]


def force_split(words: frozenset[str]) -> ForceSplit:
    """Words of frequency 0 in a user dictionary, which jieba's HMM must not keep whole (what jieba keeps in
    finalseg.Force_Split_Words), as (sorted hashes, code points, start and end of each word in hash order)."""
    if not words:
        return _NO_HASHES, _NO_CODES, _NO_SPANS, _NO_SPANS
    if words not in _force_split_cache:
        if len(_force_split_cache) > 8:
            _force_split_cache.clear()
        ordered = sorted(words)
        codes = np.frombuffer("".join(ordered).encode("utf-32-le", "surrogatepass"), np.uint32).copy()
        ends = np.cumsum([len(w) for w in ordered], dtype=np.int64)
        starts = ends - np.array([len(w) for w in ordered], np.int64)
        hashes = _hashes(codes, starts, ends)
        order = np.argsort(hashes, kind="stable")
        _force_split_cache[words] = (hashes[order], codes, starts[order], ends[order])
    return _force_split_cache[words]


@njit(cache=True)
def _hash(codes, start, end):
    h = np.uint64(1469598103934665603)
    for i in range(start, end):
        h = (h ^ np.uint64(codes[i])) * np.uint64(1099511628211)  # FNV-1a over code points
    return h


@njit(cache=True)
def _hashes(codes, starts, ends):
    out = np.empty(len(starts), np.uint64)
    for i in range(len(starts)):
        out[i] = _hash(codes, starts[i], ends[i])
    return out


@njit(cache=True)
def alnum(c):
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)


@njit(cache=True)
def in_block(c):
    """Is code point `c` in jieba's re_han_default, [\\u4E00-\\u9FD5a-zA-Z0-9+#&._%\\-] (a block's characters)?"""
    return (_FIRST <= c <= _LAST) or alnum(c) or c == 43 or c == 35 or c == 38 or c == 46 or c == 95 \
        or c == 37 or c == 45  # + # & . _ % -


@njit(cache=True)
def _is_step(codes, start, end):
    """Is token codes[start:end] single-character route steps: one block character, or ASCII letters
    and digits (HMM-off output joins consecutive ones into one token)?"""
    if end - start == 1:
        return in_block(codes[start])
    for i in range(start, end):
        if not alnum(codes[i]):
            return False
    return end > start


@njit(cache=True)
def _runs(codes):
    """(start, end) in `codes` of every run of two or more step tokens, and their buffers (the
    characters without separators) joined by \\x01."""
    n = len(codes)
    starts = np.empty(n // 2 + 1, np.int64)
    ends = np.empty(n // 2 + 1, np.int64)
    buffers = np.empty(n + 1, np.uint32)
    runs = used = 0
    run_start = run_end = tokens = 0
    start = 0
    while start <= n:
        end = start
        while end < n and codes[end] != _SEP:
            end += 1
        step = _is_step(codes, start, end)
        if step:
            if tokens == 0:
                run_start = start
            tokens += 1
            run_end = end
        if (not step or end == n) and tokens >= 2:
            if runs:
                buffers[used] = _SEP
                used += 1
            used = _copy_without(buffers, used, codes, run_start, run_end, _SEP)
            starts[runs] = run_start
            ends[runs] = run_end
            runs += 1
        if not step:
            tokens = 0
        start = end + 1
    return starts[:runs], ends[:runs], buffers[:used]


@njit(cache=True)
def _put(out, used, pending, sep, source, start, end):
    """Append the word source[start:end] (without \\x02 marks), after `sep` if a word came before."""
    if pending:
        out[used] = sep
        used += 1
    return _copy_without(out, used, source, start, end, _MARK)


@njit(cache=True)
def _copy_without(out, used, source, start, end, skip):
    """Append source[start:end] less every `skip` code to out[used:]; the new length."""
    for i in range(start, end):
        if source[i] != skip:
            out[used] = source[i]
            used += 1
    return used


@njit(cache=True)
def _viterbi(chars, start, end, emit, model, back, labels):
    """labels[start:end] = jieba's most probable B/E/M/S labels of the hanzi chars[start:end]
    (finalseg.viterbi: the same sums in the same order, ties to the later state letter)."""
    t_eb, t_sb, t_be, t_me, t_bm, t_mm, t_es, t_ss = model[4], model[5], model[6], model[7], model[8], model[9], \
        model[10], model[11]
    c = chars[start] - _FIRST
    v_b, v_e, v_m, v_s = model[0] + emit[c, 0], model[1] + emit[c, 1], model[2] + emit[c, 2], model[3] + emit[c, 3]
    for t in range(start + 1, end):
        c = chars[t] - _FIRST
        e_b, e_e, e_m, e_s = emit[c, 0], emit[c, 1], emit[c, 2], emit[c, 3]
        b_from_e, b_from_s = v_e + t_eb + e_b, v_s + t_sb + e_b
        e_from_b, e_from_m = v_b + t_be + e_e, v_m + t_me + e_e
        m_from_b, m_from_m = v_b + t_bm + e_m, v_m + t_mm + e_m
        s_from_e, s_from_s = v_e + t_es + e_s, v_s + t_ss + e_s
        # per state: did it come from E / B / B / E (else S / M / M / S)? A tie goes to the later letter.
        back[t] = (1 if b_from_e > b_from_s else 0) | (2 if e_from_b > e_from_m else 0) \
            | (4 if m_from_b > m_from_m else 0) | (8 if s_from_e > s_from_s else 0)
        v_b = b_from_e if b_from_e > b_from_s else b_from_s
        v_e = e_from_b if e_from_b > e_from_m else e_from_m
        v_m = m_from_b if m_from_b > m_from_m else m_from_m
        v_s = s_from_e if s_from_e > s_from_s else s_from_s
    state = _E if v_e > v_s else _S  # max((V[-1][y], y) for y in 'ES')
    labels[end - 1] = state
    for t in range(end - 1, start, -1):
        bits = back[t]
        if state == _B:
            state = _E if bits & 1 else _S
        elif state == _E:
            state = _B if bits & 2 else _M
        elif state == _M:
            state = _B if bits & 4 else _M
        else:
            state = _E if bits & 8 else _S
        labels[t - 1] = state


@njit(cache=True)
def _force_split_word(chars, start, end, split_hashes, split_codes, split_starts, split_ends):
    h = _hash(chars, start, end)
    i = np.searchsorted(split_hashes, h)
    while i < len(split_hashes) and split_hashes[i] == h:
        a, b = split_starts[i], split_ends[i]
        if b - a == end - start:
            same = True
            for k in range(end - start):
                if split_codes[a + k] != chars[start + k]:
                    same = False
                    break
            if same:
                return True
        i += 1
    return False


@njit(cache=True)
def hmm_words(out, used, pending, sep, chars, n, emit, model, back, labels, split_hashes, split_codes,
               split_starts, split_ends):
    """Append finalseg.cut(chars[:n]): hanzi blocks by the Viterbi (words of Force_Split_Words as single
    characters), the rest split by re_skip `[a-zA-Z0-9]+(?:\\.\\d+)?%?` with the text between matches whole."""
    i = 0
    while i < n:
        k = i
        if _FIRST <= chars[i] <= _LAST:
            while k < n and _FIRST <= chars[k] <= _LAST:
                k += 1
            _viterbi(chars, i, k, emit, model, back, labels)
            begin = i
            for p in range(i, k):
                if labels[p] == _E or labels[p] == _S or p == k - 1:  # finalseg.__cut: E/S end a word, so does the end
                    if p - begin >= 1 and len(split_hashes) and _force_split_word(
                            chars, begin, p + 1, split_hashes, split_codes, split_starts, split_ends):
                        for q in range(begin, p + 1):
                            used = _put(out, used, pending, sep, chars, q, q + 1)
                            pending = True
                    else:
                        used = _put(out, used, pending, sep, chars, begin, p + 1)
                        pending = True
                    begin = p + 1
        else:
            while k < n and not (_FIRST <= chars[k] <= _LAST):
                k += 1
            p = i
            while p < k:
                q = p + 1
                if alnum(chars[p]):
                    while q < k and alnum(chars[q]):
                        q += 1
                    if q + 1 < k and chars[q] == 46 and 48 <= chars[q + 1] <= 57:  # \.\d+
                        q += 2
                        while q < k and 48 <= chars[q] <= 57:
                            q += 1
                    if q < k and chars[q] == 37:  # %?
                        q += 1
                else:
                    while q < k and not alnum(chars[q]):
                        q += 1
                used = _put(out, used, pending, sep, chars, p, q)
                pending = True
                p = q
        i = k
    return used


@njit(cache=True)
def _render(codes, starts, ends, words, emit, model, space, split_hashes, split_codes, split_starts, split_ends,
            lines):
    """The words of the route `codes` with each run starts[r]:ends[r] re-cut (`cut` says how)."""
    n = len(codes)
    out = np.empty(2 * n + 1, np.uint32)
    chars = np.empty(n + 1, np.uint32)
    back = np.empty(n + 1, np.uint8)
    labels = np.empty(n + 1, np.uint8)
    sep = np.uint32(32) if lines else np.uint32(_SEP)
    used, pending, run, start = 0, False, 0, 0
    while start <= n:
        if run < len(starts) and start == starts[run]:
            m = 0
            for i in range(starts[run], ends[run]):
                if codes[i] != _SEP:
                    chars[m] = codes[i]
                    m += 1
            if words[run]:  # jieba yields a buffer that is a dictionary word character by character
                for i in range(m):
                    used = _put(out, used, pending, sep, chars, i, i + 1)
                    pending = True
            else:
                used = hmm_words(out, used, pending, sep, chars, m, emit, model, back, labels, split_hashes,
                                  split_codes, split_starts, split_ends)
                pending = True
            start = ends[run] + 1
            run += 1
            continue
        end = start
        while end < n and codes[end] != _SEP:
            end += 1
        if lines and end - start == 1 and codes[start] == 0:  # between two texts
            out[used] = 0
            used += 1
            pending = False
        elif lines and _all_space(codes, start, end, space):
            pass
        else:
            used = _put(out, used, pending, sep, codes, start, end)
            pending = True
        start = end + 1
    return out[:used]


@njit(cache=True)
def _all_space(codes, start, end, space):
    for i in range(start, end):
        if codes[i] >= len(space) or not space[codes[i]]:
            return False
    return end > start


@njit(cache=True)
def _long_words(codes, sep):
    spans = np.empty(len(codes) // 2 + 2, np.int64)
    used = start = 0
    for i in range(len(codes) + 1):
        if i == len(codes) or codes[i] == sep or codes[i] == 0:
            if i - start >= 3:
                spans[used] = start
                spans[used + 1] = i
                used += 2
            start = i + 1
    return spans[:used]
