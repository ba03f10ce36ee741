"""TwinBERT_res serving: ``ResidualCrossing.grid`` (every query x every cached ad) against the previous loop, which
built both per-pair feature blocks (``q * a`` and ``|q - a|``) and applied the down-projection to each.

Random 384-wide vectors and a random crossing: 2,860 queries x 9,738 ads (lesson 06's test grid) on CUDA under bf16
autocast, with float32 vectors (as the notebook's) and bfloat16 ones; a 64 x 2,000 grid on a CPU. Each version is run
once untimed, then timed; each is compared with the pair-by-pair network on a 64 x 512 corner.

``--chunks``: instead, the new grid alone at ``query_chunk`` sizes of about 2^18 ... 2^22 pairs (its default is
2^20 on a GPU), best of two timed runs each.

Run: ``python benchmarks/residual_grid.py cuda`` (or ``cpu``; add ``--chunks`` for the sweep).
"""
from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from kdtutorial.ranking.twotower import ResidualCrossing


def previous_grid(crossing: ResidualCrossing, q_vecs, ad_vecs, query_chunk: int = 16):
    """The grid as it was before: up-projection folded, but both feature blocks built per pair."""
    d = q_vecs.shape[-1]
    w_q, w_a, w_m, w_d = crossing.down.weight.split(d, dim=1)
    o_q, o_a, o_m, o_d = crossing.out.weight[0].split(d)
    fold = crossing.out.weight[0] @ crossing.up.weight
    const = crossing.out.weight[0] @ crossing.up.bias + crossing.out.bias[0]
    q_lin, a_lin = q_vecs @ w_q.T + crossing.down.bias, ad_vecs @ w_a.T
    q_out, a_out = q_vecs @ o_q, ad_vecs @ o_a
    rows = []
    for start in range(0, q_vecs.shape[0], query_chunk):
        q = q_vecs[start : start + query_chunk]
        prod = q[:, None, :] * ad_vecs[None, :, :]
        diff = (q[:, None, :] - ad_vecs[None, :, :]).abs()
        h = q_lin[start : start + query_chunk, None, :] + a_lin[None] + prod @ w_m.T + diff @ w_d.T
        linear = q_out[start : start + query_chunk, None] + a_out[None] + prod @ o_m + diff @ o_d
        rows.append(linear + F.relu(h) @ fold + const)
    return torch.cat(rows)


def main(device: str = "cpu", chunks: bool = False) -> None:
    gpu = device == "cuda"
    n_queries, n_ads = (2860, 9738) if gpu else (64, 2000)
    torch.manual_seed(0)
    crossing = ResidualCrossing(384).to(device).eval()

    def timed(run):
        """``(seconds, result)`` of one call, CUDA-synchronised."""
        if gpu:
            torch.cuda.synchronize()
        began = time.perf_counter()
        out = run()
        if gpu:
            torch.cuda.synchronize()
        return time.perf_counter() - began, out

    if chunks:
        q, a = torch.randn(n_queries, 384, device=device), torch.randn(n_ads, 384, device=device)
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=gpu):
            for log2 in range(18, 23):
                chunk = max(1, 2**log2 // n_ads)
                timed(lambda: crossing.grid(q, a, query_chunk=chunk))  # untimed first call
                seconds = min(timed(lambda: crossing.grid(q, a, query_chunk=chunk))[0] for _ in range(2))
                print(f"query_chunk {chunk} (about 2^{log2} pairs): grid {seconds * 1000:.1f} ms", flush=True)
        return

    for dtype in (torch.float32, torch.bfloat16) if gpu else (torch.float32,):
        q = torch.randn(n_queries, 384, device=device).to(dtype)
        a = torch.randn(n_ads, 384, device=device).to(dtype)
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=gpu):
            reference = crossing(q[:64, None].float(), a[None, :512].float()).float()  # pair by pair
            for name, run in (("old", lambda: previous_grid(crossing, q, a)), ("new", lambda: crossing.grid(q, a))):
                run()
                seconds, out = timed(run)
                gap = (out[:64, :512].float() - reference).abs().max().item()
                print(f"vectors {str(dtype)[6:]}: {name} grid {seconds * 1000:.1f} ms, "
                      f"{n_queries * n_ads / seconds:,.0f} pairs/s; max difference from the pair-by-pair network "
                      f"{gap:.3g} (logits up to {reference.abs().max().item():.2f})", flush=True)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--chunks"]
    main(args[0] if args else "cpu", chunks="--chunks" in sys.argv[1:])
