"""Where the time of one lean teacher-scoring batch goes (CUDA): kernel table from torch.profiler, and the
batch time with each attention backend. Random ids of one length; the MiniLM-L6 cross-encoder (random head)."""
from __future__ import annotations

import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import kdtutorial as kd
from kdtutorial.ranking import crossencoder as ce


def timed(fn, n=20):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def main():
    kd.environment.seed_everything(0)
    teacher = ce.CrossEncoder(kd.hub.load_masked_lm("sentence-transformers/all-MiniLM-L6-v2").base_model.float()).eval()
    lean = kd.leanscorer.LeanCrossEncoder(teacher, dtype=torch.bfloat16, gelu_epilogue=True).cuda()
    B, L = 5698, 46
    ids = torch.randint(1000, 20000, (B, L), device="cuda")
    ids[:, 0], ids[:, 10], ids[:, -1] = 101, 102, 102
    with torch.inference_mode():
        for attention in ("sdpa", "matmul"):
            for epilogue in (False, True):
                model = kd.leanscorer.LeanCrossEncoder(teacher, dtype=torch.bfloat16, gelu_epilogue=epilogue,
                                                       attention=attention).cuda()
                for rows in (512, 1024, 2048, 5698):
                    s = timed(lambda: model(ids[:rows]))
                    print(f"{attention}, epilogue {epilogue}, batch {rows}: {s * 1e3:.2f} ms = {rows / s:,.0f} pairs/s",
                          flush=True)
        for attention in ("sdpa", "matmul"):
            model = kd.leanscorer.LeanCrossEncoder(teacher, dtype=torch.bfloat16, attention=attention).cuda()
            compiled = torch.compile(model, dynamic=True)
            began = time.perf_counter()
            compiled(ids[:100])
            print(f"compile {attention}: {time.perf_counter() - began:.1f} s", flush=True)
            for rows in (1024, 2048, 5698):
                s = timed(lambda: compiled(ids[:rows]))
                print(f"compiled {attention}, batch {rows}: {s * 1e3:.2f} ms = {rows / s:,.0f} pairs/s", flush=True)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                compiled(ids[:2048])
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    main()
