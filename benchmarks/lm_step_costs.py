"""Lesson 08: seconds per training step of each method, and of the one-off teacher passes, at a given size.

    python benchmarks/lm_step_costs.py --device cuda --batch 64 --continuation 24 --layers 0 6 12 17 23 29

Used to size the full profile (the whole lesson must fit one GPU call); prints one line per measurement.
"""
import argparse
import time

import torch

import kdtutorial as kd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=8)
    ap.add_argument("--continuation", type=int, default=16)
    ap.add_argument("--windows", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 10, 19, 29])
    ap.add_argument("--amp", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    t = time.perf_counter()
    teacher = kd.causallm.load_causal_lm().to(device)
    tok = kd.causallm.load_lm_tokenizer()
    print(f"load {time.perf_counter() - t:.1f} s: {teacher.resolved.describe()}")
    data = kd.lmcompare.build_lm_data(tok, train_windows=args.windows, heldout_windows=256, wiki_windows=64,
                                      prompt_tokens=args.prompt, continuation_tokens=args.continuation)
    setting = kd.lmdistil.LMSetting(steps=args.steps, batch_size=args.batch, device=args.device, amp=args.amp,
                                    eval_batch=128 if device.type == "cuda" else 16)
    for name, fn in (("teacher top-k", lambda: kd.lmdistil.teacher_top_k(teacher, data.train, 50, batch_size=128,
                                                                        device=device, amp=args.amp)),
                     ("teacher continuations", lambda: kd.lmdistil.teacher_continuations(
                         teacher, data.train, batch_size=256, device=device))):
        kd.environment.synchronize(device)
        t = time.perf_counter()
        out = fn()
        kd.environment.synchronize(device)
        print(f"{name}: {time.perf_counter() - t:.2f} s for {args.windows} windows")
        if name == "teacher top-k":
            top_k = out
        else:
            teacher_text = out
    for method in kd.lmdistil.LM_METHODS:
        student = kd.lmcompare.new_lm_student(teacher, "copied", args.layers, 0)
        h = kd.lmdistil.train_lm_student(method, student, teacher, data.train, setting, 0, top_k=top_k,
                                         teacher_text=teacher_text)
        print(f"{method}: {h['seconds'] / args.steps * 1000:.0f} ms/step ({h['on_policy_steps']} on-policy steps)")
    t = time.perf_counter()
    scores = kd.lmeval.score_lm(student, teacher, data.heldout, data.wiki, seed=0, batch_size=setting.eval_batch,
                                device=device, amp=args.amp)
    print(f"score_lm: {time.perf_counter() - t:.1f} s for 256 + 64 windows: {scores}")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
