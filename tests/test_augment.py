"""TinyBERT data augmentation: MLM replacements for characters, vector neighbours for words, rate p, seeds."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors
from transformers import AutoTokenizer, BertForMaskedLM

from nlp_pipe.augmentation.word_substitution import _neighbours, augment
from nlp_pipe.text.segmenter import Segmenter, SegmenterSpec

IN_VECTORS = ["酒店", "地铁", "方便", "房间", "干净", "服务", "热情", "价格", "便宜", "早餐"]
NEIGHBOURS_ONLY = ["宾馆", "旅馆", "公交", "舒适", "卫生", "周到", "实惠", "午餐", "环境", "位置"]
OOV = ["空调", "隔音"]
CHARS = ["很", "好", "也", "不", "太", "差", "真", "贵", "床", "大"]
KEEP = ["，", "！", "2020"]
FAVOURITES = ["甲", "乙", "丙"]  # the MLM's top 3 everywhere: its output bias is raised for them
TOP_K = 3


@pytest.fixture(scope="module")
def setup(tiny_bert):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine (docs/performance.md)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    mlm = BertForMaskedLM.from_pretrained(tiny_bert)
    with torch.no_grad():
        mlm.cls.predictions.bias[tokenizer.convert_tokens_to_ids(FAVOURITES)] += 100.0
    words = IN_VECTORS + NEIGHBOURS_ONLY + ["，"]  # punctuation in the vectors must never be offered
    vectors = KeyedVectors(16)
    vectors.add_vectors(words, np.random.default_rng(0).standard_normal((len(words), 16)).astype(np.float32))
    rng = random.Random(0)
    # words separated by spaces (which jieba drops and augment keeps) so copies align word by word
    texts = [" ".join(rng.choice(IN_VECTORS + OOV + CHARS + KEEP) for _ in range(12)) for _ in range(20)]
    yield {"tokenizer": tokenizer, "teacher_mlm": mlm, "vectors": vectors, "segmenter": Segmenter(SegmenterSpec())}, texts
    torch.set_num_threads(threads)


def run(setup, texts, **options):
    models, _ = setup
    labels = [f"label{i % 3}" for i in range(len(texts))]
    return augment(texts, labels, **{"n_copies": 20, "p": 0.4, "top_k": TOP_K, "seed": 7, **models, **options})


def test_originals_first_and_labels_kept(setup):
    texts = setup[1]
    rows, stats = run(setup, texts, n_copies=4)
    assert stats.rows == len(rows) and stats.texts == len(texts)
    assert len(rows) == len(texts) * 5 - stats.duplicates_dropped
    sources = [source for _, _, source in rows]
    assert sources == sorted(sources)
    for i, text in enumerate(texts):
        own = [(t, label) for t, label, source in rows if source == i]
        assert own[0] == (text, f"label{i % 3}") and {label for _, label in own} == {f"label{i % 3}"}
        assert len({t for t, _ in own}) == len(own)  # no duplicates


def test_replacements_come_from_the_mlm_top_k_and_the_neighbours_at_rate_p(setup):
    texts = setup[1]
    vectors = setup[0]["vectors"]
    rows, stats = run(setup, texts)
    originals = {i: text.split(" ") for i, text in enumerate(texts)}
    neighbours = {w: {n for n, _ in vectors.most_similar(w, topn=TOP_K)} - {"，"} for w in IN_VECTORS}
    replaceable = changed = 0
    from_mlm = set()
    for text, _, source in rows:
        if text == texts[source]:
            continue
        new = text.split(" ")
        assert len(new) == len(originals[source])
        for old, word in zip(originals[source], new):
            if old in OOV or old in KEEP:
                assert word == old
                continue
            replaceable += 1
            if word != old:
                changed += 1
                if old in CHARS:
                    from_mlm.add(word)
                else:
                    assert word in neighbours[old], (old, word)
    assert from_mlm == set(FAVOURITES)  # drawn among the top K, not always the best
    assert 0.25 < changed / replaceable < 0.55
    assert stats.replaced_mlm > 0 and stats.replaced_vectors > 0 and stats.kept_oov > 0
    assert stats.replaced_mlm + stats.replaced_vectors >= changed  # stats also count the dropped duplicates


@pytest.mark.parametrize("restrict", [None, 12])
def test_neighbours_rank_like_most_similar(setup, restrict):
    vectors = setup[0]["vectors"]
    found = _neighbours(set(IN_VECTORS) | set(OOV), vectors, 5, restrict)
    assert set(found) == set(IN_VECTORS)
    for word in IN_VECTORS:
        assert found[word] == [w for w, _ in vectors.most_similar(word, topn=5, restrict_vocab=restrict) if w != "，"]


def test_deterministic_with_the_seed_whatever_the_batching(setup):
    texts = setup[1]
    first, _ = run(setup, texts, n_copies=3)
    assert run(setup, texts, n_copies=3, batch_size=5)[0] == first
    assert run(setup, texts, n_copies=3, seed=8)[0] != first
