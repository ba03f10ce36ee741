"""Lesson 09: seconds per student step of each augmentation (KD, random pool, vanilla kNN, Minimax-kNN), split into
choosing the augmented sentences and the training step itself, and the teacher's fine-tuning speed.

    python benchmarks/knn_step_costs.py --device cuda --amp --batch 32 --steps 40

The pool is made of SST-2 training sentences glued in pairs (about as long as IMDB review sentences), the teacher
an un-fine-tuned MiniLM (speed does not depend on its weights). Used to size the full profile: the whole lesson must
fit one GPU call. Prints one line per measurement.
"""
import argparse
import time

import numpy as np
import torch

import kdtutorial as kd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--K", type=int, default=8)
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 2, 4])
    args = ap.parse_args()
    device = torch.device(args.device)
    name = "sentence-transformers/all-MiniLM-L6-v2"
    tok, mlm = kd.hub.load_tokenizer(name), kd.hub.load_masked_lm(name)
    teacher = kd.finetuning.SentenceClassifier(kd.students.copy_layers_encoder(mlm.base_model, range(6))).eval()
    train = kd.sst2.load_sst2("train").shuffle(seed=0)
    sents = train["sentence"][: args.sentences]
    labels = np.asarray(train["label"][: args.sentences])
    other = train["sentence"][args.sentences: args.sentences + 40000]
    pool = [a + " " + b for a, b in zip(other[::2], other[1::2])]
    nb = np.random.default_rng(0).integers(0, len(pool), size=(len(sents), args.K))
    t = time.perf_counter()
    data = kd.knnaug.build_knn_data(teacher.to(device), tok, sents, labels, pool, nb,
                                    random_count=min(len(pool), args.K * len(sents)), max_length=args.max_length,
                                    batch_size=1024, device=device, amp=args.amp)
    kd.environment.synchronize(device)
    print(f"build_knn_data: {time.perf_counter() - t:.1f} s for {len(data.cand_sentences):,} candidates")
    t = time.perf_counter()
    kd.finetuning.fine_tune(kd.finetuning.SentenceClassifier(kd.students.copy_layers_encoder(mlm.base_model, range(6))),
                            data.train_text, labels, epochs=1, batch_size=64, device=device, amp=args.amp,
                            max_steps=args.steps, progress=False)
    kd.environment.synchronize(device)
    print(f"teacher fine-tuning: {(time.perf_counter() - t) / args.steps * 1000:.0f} ms per step of 64")
    setting = kd.knnaug.KnnSetting(steps=args.steps, batch_size=args.batch, device=str(device), amp=args.amp)
    for method, aug in kd.knnaug.knn_methods(args.K, [1, 2, 4], 0.22).items():
        student = kd.finetuning.SentenceClassifier(kd.students.copy_layers_encoder(mlm.base_model, args.layers))
        kd.knnaug.train_knn_student(student, data, aug, kd.knnaug.KnnSetting(**{**vars(setting), "steps": 2}))
        run = kd.knnaug.train_knn_student(student, data, aug, setting)
        rows = np.arange(args.batch)
        t = time.perf_counter()
        for _ in range(args.steps):
            kd.knnaug.augmented_rows(aug, data, rows, student, tau=1.0, generator=torch.Generator().manual_seed(0),
                                     device=device, amp=args.amp)
        kd.environment.synchronize(device)
        choose = (time.perf_counter() - t) / args.steps
        print(f"{method}: {run.seconds / args.steps * 1000:.0f} ms per step of {args.batch} "
              f"(+{run.augmented / args.steps:.0f} augmented); choosing alone {choose * 1000:.0f} ms")


if __name__ == "__main__":
    main()
