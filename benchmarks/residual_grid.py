"""TwinBERT_res serving: ResidualCrossing.grid (every query x every cached ad) against the previous loop that
built both per-pair feature blocks; random 384-wide vectors, 2,860 queries x 9,738 ads on CUDA (bf16 autocast), a
small grid on a CPU. Run: python benchmarks/residual_grid.py cuda"""
import time, torch, sys
import torch.nn.functional as F
from kdtutorial.twotower import ResidualCrossing
def old_grid(self, q_vecs, ad_vecs, query_chunk=16):
    d = q_vecs.shape[-1]
    w_q, w_a, w_m, w_d = self.down.weight.split(d, dim=1)
    o_q, o_a, o_m, o_d = self.out.weight[0].split(d)
    fold = self.out.weight[0] @ self.up.weight
    const = self.out.weight[0] @ self.up.bias + self.out.bias[0]
    q_lin, a_lin = q_vecs @ w_q.T + self.down.bias, ad_vecs @ w_a.T
    q_out, a_out = q_vecs @ o_q, ad_vecs @ o_a
    rows = []
    for start in range(0, q_vecs.shape[0], query_chunk):
        q = q_vecs[start : start + query_chunk]
        prod = q[:, None, :] * ad_vecs[None, :, :]
        diff = (q[:, None, :] - ad_vecs[None, :, :]).abs()
        h = q_lin[start : start + query_chunk, None, :] + a_lin[None] + prod @ w_m.T + diff @ w_d.T
        linear = (q_out[start : start + query_chunk, None] + a_out[None] + prod @ o_m + diff @ o_d)
        rows.append(linear + F.relu(h) @ fold + const)
    return torch.cat(rows)
dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
Q, A = (2860, 9738) if dev == "cuda" else (64, 2000)
torch.manual_seed(0)
m = ResidualCrossing(384).to(dev).eval()
amp = dev == "cuda"
for dtype in ((torch.float32, torch.bfloat16) if amp else (torch.float32,)):  # the notebook's vectors are float32
    q = torch.randn(Q, 384, device=dev).to(dtype); a = torch.randn(A, 384, device=dev).to(dtype)
    with torch.inference_mode(), torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
        reference = m(q[:64, None].float(), a[None, :512].float()).float()  # the pair-by-pair network
        for name, fn in (("old", lambda: old_grid(m, q, a)), ("new", lambda: m.grid(q, a))):
            fn()
            if amp: torch.cuda.synchronize()
            t = time.perf_counter(); out = fn()
            if amp: torch.cuda.synchronize()
            dt = time.perf_counter() - t
            gap = (out[:64, :512].float() - reference).abs().max().item()
            print(f"vectors {str(dtype)[6:]}: {name} grid {dt * 1000:.1f} ms, {Q * A / dt:,.0f} pairs/s; max difference "
                  f"from the pair-by-pair network {gap:.3g} (logits up to {reference.abs().max().item():.2f})", flush=True)
