"""Teacher scoring near the GPU's limit: BERT's layers written out for inference, fed batches without padding.

Lesson 06's teacher scores a million (query, ad) pairs. :func:`kdtutorial.ranking.crossencoder.score_pairs` already
sorts pairs by length so each batch is padded only to its own longest pair. Two things still cost time there: the
remaining padding forces a masked (slower) attention kernel, and the Hugging Face layer runs op by op, with separate
query / key / value matrix products and bias, activation and layer-norm kernels that each read and write the whole
activation tensor. This module removes both:

* :func:`exact_length_spans` groups the length-sorted pairs into batches of **one length each** (at most
  ``batch_tokens`` tokens a batch). No batch has padding, so attention needs no mask and PyTorch's
  ``scaled_dot_product_attention`` takes its flash kernel; no position is computed for nothing.
* :class:`LeanCrossEncoder` is the same network as a ``pooling="cls"``
  :class:`~kdtutorial.ranking.crossencoder.CrossEncoder` (BERT, Devlin et al. 2019, Sec. 3; the layer of Vaswani et
  al. 2017, Sec. 3.2-3.3), with its weights rearranged for inference: one fused ``W_qkv`` product per layer instead
  of three, tokens flattened to ``(B * L, D)`` for every matrix product, the feed-forward GELU optionally fused into
  the matrix product's epilogue (``gelu_epilogue``, cuBLASLt's tanh-approximated GELU), and the last layer computed
  for ``[CLS]`` alone (as :class:`~kdtutorial.ranking.crossencoder.ClsScorer`; keys and values still for every token):

      X_0 = LN(E_word[ids] + E_pos[0..L) + E_type[segments])
      [Q K V] = X W_qkv + b_qkv,   A = LN(X + softmax(Q K^T / sqrt(d)) V W_o + b_o),   X' = LN(A + GELU(A W_1 + b_1) W_2 + b_2)
      logit = w_head . X_last[CLS] + b_head

  In float32 its logits equal the cross-encoder's (pinned by ``tests/ranking/test_leanscorer.py``); in bfloat16 they
  differ by rounding, which lesson 06 prints against the float32 reference. ``torch.compile`` of it
  (``score_pairs(..., compile=True)``) can fuse the residual additions and layer norms as well.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["exact_length_spans", "LeanCrossEncoder", "linear_bound", "ATTENTIONS"]

#: how :class:`LeanCrossEncoder` computes softmax(Q K^T / sqrt(d)) V: PyTorch's fused kernel, or two batched matrix
#: products around a softmax (for pairs of a few dozen tokens the fused kernels' tiles are mostly empty)
ATTENTIONS = ("sdpa", "matmul")


def exact_length_spans(sorted_lengths: np.ndarray, batch_tokens: int) -> list[tuple[int, int, int]]:
    """Batches ``(start, stop, length)`` over rows sorted by length, each holding rows of one length only.

    Every batch has at most ``max(1, batch_tokens // length)`` rows; together the spans cover ``0..n`` in order.
    ``sorted_lengths`` must be non-decreasing (``np.sort`` of the pair lengths); anything else is a ``ValueError``.
    """
    lengths = np.asarray(sorted_lengths)
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
    if lengths.ndim != 1:
        raise ValueError(f"sorted_lengths must be one length per row, got shape {lengths.shape}")
    if len(lengths) > 1 and np.any(np.diff(lengths) < 0):
        raise ValueError("sorted_lengths must be sorted (non-decreasing): sort the pairs by length first")
    if len(lengths) and lengths[0] < 1:
        raise ValueError(f"every pair needs at least one token, got a length of {int(lengths[0])}")
    spans = []
    values, starts = np.unique(lengths, return_index=True)
    stops = starts[1:].tolist() + [len(lengths)]
    for length, start, stop in zip(values.tolist(), starts.tolist(), stops):
        rows = max(1, int(batch_tokens) // int(length))
        spans += [(s, min(s + rows, stop), int(length)) for s in range(start, stop, rows)]
    return spans


class LeanCrossEncoder(nn.Module):
    """A ``pooling="cls"`` BERT-family :class:`~kdtutorial.ranking.crossencoder.CrossEncoder` for inference only
    (see the module docstring for the equations). The weights are copies, in ``dtype``; the model given is unchanged.

    Supported: absolute position embeddings and ``hidden_act = "gelu"`` (BERT, MiniLM); anything else is a
    ``ValueError`` naming what differs. ``forward(input_ids, attention_mask=None, token_type_ids=None)`` as the
    cross-encoder's: without a mask every row is taken to be unpadded (what :func:`exact_length_spans` batches
    are), and the segment ids are derived from the ids with
    :func:`~kdtutorial.ranking.crossencoder.pair_token_type_ids` when not given.
    """

    def __init__(self, model: nn.Module, *, dtype: torch.dtype = torch.float32, gelu_epilogue: bool = False,
                 attention: str = "sdpa"):
        super().__init__()
        from kdtutorial.text.students import encoder_layers

        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        if getattr(model, "pooling", None) != "cls":
            raise ValueError("LeanCrossEncoder needs a CrossEncoder with pooling='cls'")
        config = model.encoder.config
        if getattr(config, "model_type", "bert") != "bert":  # e.g. RoBERTa numbers its positions from padding_idx + 1
            raise ValueError(f"LeanCrossEncoder supports BERT-architecture encoders (model_type 'bert': BERT, MiniLM) "
                             f"only, this encoder is {config.model_type!r}")
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"LeanCrossEncoder supports absolute position embeddings only, this encoder has "
                             f"{config.position_embedding_type!r}")
        if getattr(config, "hidden_act", None) != "gelu":
            raise ValueError(f"LeanCrossEncoder supports hidden_act='gelu' only, this encoder has {config.hidden_act!r}")
        emb = getattr(model.encoder, "base_model", model.encoder).embeddings

        def p(t):
            return nn.Parameter(t.detach().clone().to(dtype), requires_grad=False)

        def ln(module, prefix):
            return {f"{prefix}_w": p(module.weight), f"{prefix}_b": p(module.bias)}

        self.embed = nn.ParameterDict(dict(word=p(emb.word_embeddings.weight), position=p(emb.position_embeddings.weight),
                                           token_type=p(emb.token_type_embeddings.weight), **ln(emb.LayerNorm, "ln")))
        self.layers = nn.ModuleList()
        for layer in encoder_layers(model.encoder):
            s = layer.attention.self
            self.layers.append(nn.ParameterDict(dict(
                w_qkv=p(torch.cat([s.query.weight, s.key.weight, s.value.weight])),
                b_qkv=p(torch.cat([s.query.bias, s.key.bias, s.value.bias])),
                w_o=p(layer.attention.output.dense.weight), b_o=p(layer.attention.output.dense.bias),
                **ln(layer.attention.output.LayerNorm, "ln_1"),
                w_1=p(layer.intermediate.dense.weight), b_1=p(layer.intermediate.dense.bias),
                w_2=p(layer.output.dense.weight), b_2=p(layer.output.dense.bias), **ln(layer.output.LayerNorm, "ln_2"))))
        self.eps = float(emb.LayerNorm.eps)
        self.head = nn.ParameterDict(dict(w=p(model.head.weight), b=p(model.head.bias)))
        self.heads = int(config.num_attention_heads)
        self.head_dim = int(config.hidden_size) // self.heads
        self.sep_id, self.uses_token_types = model.sep_id, model.uses_token_types
        self.gelu_epilogue, self.attention = bool(gelu_epilogue), attention
        self.eval()

    def _up(self, a: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.gelu_epilogue and a.is_cuda:
            return torch._addmm_activation(b, a, w.t(), use_gelu=True)  # cuBLASLt GELU epilogue (tanh form)
        return F.gelu(F.linear(a, w, b))

    def _ln(self, x, w, name) -> torch.Tensor:
        return F.layer_norm(x, w[f"{name}_w"].shape, w[f"{name}_w"], w[f"{name}_b"], self.eps)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Relevance logits ``(B,)`` in ``dtype`` (``attention_mask=None``: rows without padding)."""
        from kdtutorial.ranking.crossencoder import pair_token_type_ids

        e = self.embed
        batch, length = input_ids.shape
        d_model, n_layers = e["word"].shape[1], len(self.layers)
        x = e["word"][input_ids] + e["position"][:length]
        if self.uses_token_types:
            if token_type_ids is None:
                full = torch.ones_like(input_ids) if attention_mask is None else attention_mask
                token_type_ids = pair_token_type_ids(input_ids, full, self.sep_id)
            x = x + e["token_type"][token_type_ids]
        else:  # a single-type encoder still adds its one segment embedding (BERT's all-zero token_type_ids buffer)
            x = x + e["token_type"][0]
        x = self._ln(x, e, "ln").reshape(batch * length, d_model)
        mask = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        for i, w in enumerate(self.layers):
            last = i == n_layers - 1
            qkv = F.linear(x, w["w_qkv"], w["b_qkv"]).view(batch, length, 3, self.heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, d)
            if last:  # only [CLS] feeds the head: its query, and everything after attention, at one position
                q, x = q[:, :, :1], x.view(batch, length, d_model)[:, 0]
            if self.attention == "sdpa":
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            else:
                scores = torch.matmul(q, k.transpose(-1, -2)) * self.head_dim**-0.5
                if mask is not None:
                    scores = scores.masked_fill(~mask, float("-inf"))
                context = torch.matmul(scores.softmax(-1), v)
            rows = batch if last else batch * length
            a = self._ln(F.linear(context.transpose(1, 2).reshape(rows, d_model), w["w_o"], w["b_o"]) + x, w, "ln_1")
            x = self._ln(F.linear(self._up(a, w["w_1"], w["b_1"]), w["w_2"], w["b_2"]) + a, w, "ln_2")
        return F.linear(x, self.head["w"], self.head["b"]).squeeze(-1)


@torch.inference_mode()
def linear_bound(model: LeanCrossEncoder, length: int, batch: int, *, device, repeats: int = 10) -> dict:
    """The speed limit set by the matrix products alone: every layer's ``W_qkv``, ``W_o``, ``W_1`` and ``W_2`` (with
    their biases) on ``batch`` pairs of ``length`` tokens, timed after a warm-up, nothing else (no embedding, attention,
    activation or layer norm). Returns ``pairs_per_s``, ``tflops`` (multiply-adds counted twice) and the sizes.
    A scorer's ``pairs_per_s`` divided by this one is the share of the bound it reaches."""
    from kdtutorial.common.environment import synchronize

    device = torch.device(device)
    w0 = model.layers[0]
    d_model = w0["w_qkv"].shape[1]
    x = torch.randn(batch * length, d_model, device=device, dtype=w0["w_qkv"].dtype)
    h = torch.randn(batch * length, w0["w_1"].shape[0], device=device, dtype=x.dtype)

    def once():
        for w in model.layers:
            F.linear(x, w["w_qkv"], w["b_qkv"])
            F.linear(x, w["w_o"], w["b_o"])
            F.linear(x, w["w_1"], w["b_1"])
            F.linear(h, w["w_2"], w["b_2"])

    once()
    synchronize(device)
    began = time.perf_counter()
    for _ in range(repeats):
        once()
    synchronize(device)
    seconds = (time.perf_counter() - began) / repeats
    flops = 2 * batch * length * sum(w["w_qkv"].numel() + w["w_o"].numel() + w["w_1"].numel() + w["w_2"].numel()
                                     for w in model.layers)
    return {"length": int(length), "batch": int(batch), "pairs_per_s": batch / seconds, "tflops": flops / seconds / 1e12}
