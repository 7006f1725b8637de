"""TinyBERT distillation core: layer mapping, student configs, losses, gradients, int8 round trip, speed."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from nlp_pipe.core.errors import UserError
from nlp_pipe.metrics.throughput import param_count, texts_per_second
from nlp_pipe.models.int8 import load_int8, quantize_int8, save_int8
from nlp_pipe.models.tinybert import Distiller, layer_map, soft_cross_entropy, student_config


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two intra-op threads on a shared 2-core machine can be 100x slower for tiny models (docs/performance.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def classifier(layers: int = 4, hidden: int = 32, heads: int = 2, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=120, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=32, num_labels=3)
    return BertForSequenceClassification(config)


def batch(pad_with: int = 0) -> dict[str, torch.Tensor]:
    ids = torch.tensor([[2, 15, 16, 17, 18, 19, 3], [2, 25, 26, 3, 0, 0, 0], [2, 33, 3, 0, 0, 0, 0]])
    mask = (torch.arange(7) < torch.tensor([[7], [4], [3]])).long()
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad_with))
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1])}


def test_layer_map_uniform_and_explicit():
    assert layer_map(4, 12) == [3, 6, 9, 12]
    assert layer_map(2, 4) == [2, 4]
    assert layer_map(3, 8) == [2, 5, 8]  # not divisible: floor(m * N / M)
    assert layer_map(3, 12, [1, 5, 12]) == [1, 5, 12]
    for bad in ([1, 5], [5, 5, 12], [0, 5, 12], [1, 5, 13], [6, 5, 12]):
        with pytest.raises(UserError, match="increasing teacher layers"):
            layer_map(3, 12, bad)
    with pytest.raises(UserError):
        layer_map(6, 4)


def test_student_config_presets_and_json(tiny_bert, tmp_path):
    teacher = BertConfig.from_pretrained(tiny_bert)
    config = student_config(teacher, "tinybert4")
    assert (config.vocab_size, config.max_position_embeddings, config.type_vocab_size, config.pad_token_id) == \
        (21128, 128, teacher.type_vocab_size, teacher.pad_token_id)
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.num_attention_heads) == (4, 312, 1200, 12)
    assert student_config(teacher, "tinybert6").hidden_size == 768
    with pytest.raises(UserError, match="tinybert4, tinybert6"):
        student_config(teacher, "tinybert5")
    path = tmp_path / "student.json"
    path.write_text(json.dumps({"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}))
    assert student_config(teacher, path).hidden_size == 16 and student_config(teacher, path).vocab_size == 21128
    for fields, message in (({"vocab_size": 99}, "differs from the teacher"), ({"hidden_layers": 2}, "not a BertConfig field"),
                            ({"hidden_size": 30, "num_attention_heads": 4}, "not a multiple")):
        path.write_text(json.dumps(fields))
        with pytest.raises(UserError, match=message):
            student_config(teacher, path)


def test_soft_cross_entropy_matches_the_formula():
    student, teacher, t = [[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]], [[3.0, 1.0, 0.0], [1.0, 1.0, 1.0]], 2.0

    def softmax(z):
        e = [math.exp(v / t) for v in z]
        return [v / sum(e) for v in e]

    expected = sum(-pt * math.log(ps) for zs, zt in zip(student, teacher) for ps, pt in zip(softmax(zs), softmax(zt))) / 2
    assert soft_cross_entropy(torch.tensor(student), torch.tensor(teacher), t).item() == pytest.approx(expected, rel=1e-6)


def test_identical_student_has_zero_intermediate_losses_and_minimal_prediction_loss():
    teacher = classifier()
    distiller = Distiller(teacher, copy.deepcopy(teacher), mode="both", projection="identity", temperature=2.0).eval()
    b = batch()
    out = distiller(**b)
    assert set(out) == {"loss", "embedding_loss", "hidden_loss", "attention_loss", "prediction_loss"}
    for name in ("embedding_loss", "hidden_loss", "attention_loss"):
        assert out[name].item() < 1e-6, name
    # soft cross-entropy cannot go below the teacher's entropy; it reaches it when the logits agree
    probs = torch.softmax(teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits / 2.0, dim=-1)
    entropy = -(probs * probs.log()).sum(-1).mean()
    assert out["prediction_loss"].item() == pytest.approx(entropy.item(), abs=1e-6)


def test_attention_loss_uses_pre_softmax_scores_and_ignores_padding():
    teacher = classifier()
    distiller = Distiller(teacher, classifier(layers=2, seed=1), mode="intermediate").eval()
    b = batch()
    out = distiller.teacher.bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                 output_hidden_states=True, output_attentions=True)
    attention = distiller.teacher.bert.encoder.layer[0].attention.self
    heads = lambda x: x.view(3, 7, 2, 16).transpose(1, 2)  # noqa: E731
    hidden = out.hidden_states[0]
    scores = heads(attention.query(hidden)) @ heads(attention.key(hidden)).transpose(2, 3) / 4.0
    real = b["attention_mask"].bool()
    pairs = (real[:, None, :, None] & real[:, None, None, :]).expand_as(scores)
    assert torch.allclose(out.attentions[0][pairs], scores[pairs], atol=1e-5)  # scores, not probabilities
    padded_differently = distiller(**batch(pad_with=77))
    for name, value in distiller(**b).items():
        assert value.item() == pytest.approx(padded_differently[name].item(), abs=1e-6), name


def test_smaller_student_trains_through_projections_and_teacher_stays_frozen():
    teacher = classifier()
    student = classifier(layers=2, hidden=24, seed=1)
    distiller = Distiller(teacher, student, mode="both", projection="per_layer", weights={"hard": 0.5})
    assert distiller.layers == [2, 4] and len(distiller.projections) == 3
    distiller.train()
    assert not distiller.teacher.training and distiller.student.training
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = student.bert.encoder.layer[0].attention.self.query.weight.clone()
    out = distiller(**batch())
    assert set(out) == {"loss", "embedding_loss", "hidden_loss", "attention_loss", "prediction_loss", "hard_loss"}
    assert all(value.item() > 0 for value in out.values())
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.projections.parameters())
    assert student.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    torch.optim.AdamW([p for p in distiller.parameters() if p.requires_grad], lr=1e-2).step()
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())
    assert not torch.equal(student.bert.encoder.layer[0].attention.self.query.weight, student_before)
    state = distiller.state_dict()  # checkpoints hold the student and projections, not the frozen teacher
    assert state and not any(k.startswith("teacher.") for k in state)
    distiller.load_state_dict(state)  # strict: the teacher's absence is not an error


def test_prediction_mode_and_invalid_setups():
    teacher = classifier()
    out = Distiller(teacher, classifier(layers=2, hidden=24, seed=1), mode="prediction")(**batch())
    assert set(out) == {"loss", "prediction_loss"} and out["loss"] == out["prediction_loss"]
    with pytest.raises(UserError, match="head by head"):
        Distiller(teacher, classifier(layers=2, hidden=24, heads=4))
    with pytest.raises(UserError, match="identity"):
        Distiller(teacher, classifier(layers=2, hidden=24), projection="identity")
    with pytest.raises(UserError, match="unknown distillation loss weights"):
        Distiller(teacher, classifier(layers=2), weights={"hiden": 2.0})


def test_int8_round_trip(tmp_path):
    model = classifier(layers=2).eval()
    model.save_pretrained(tmp_path)
    quantized = quantize_int8(model)
    save_int8(quantized, tmp_path)
    reloaded = load_int8(tmp_path)
    ids = batch()["input_ids"]
    assert type(reloaded.classifier).__module__.startswith("torch.ao.nn.quantized")
    with torch.inference_mode():
        assert torch.equal(quantized(input_ids=ids).logits, reloaded(input_ids=ids).logits)
        assert torch.allclose(quantized(input_ids=ids).logits, model(input_ids=ids).logits, atol=0.05)


def test_texts_per_second_and_param_count():
    model = classifier(layers=2)
    assert texts_per_second(model, batch_size=4, seq_len=16, repeats=2, threads=1) > 0
    assert model.training  # restored after measuring
    assert param_count(model) == sum(p.numel() for p in model.parameters())
