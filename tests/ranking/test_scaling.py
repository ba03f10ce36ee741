"""Teacher scoring and training under Hugging Face Accelerate (``kdtutorial.ranking.scaling``, ``optim.train_steps``).

One process must give exactly what the plain functions give; two CPU processes (``accelerate.debug_launcher``,
gloo) must gather every score back in order and keep the data-parallel replicas identical. Tiny random models
on fabricated ids; nothing uses the network.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _support import tiny_bert
from kdtutorial.ranking import crossencoder as ce
from kdtutorial.text import optim
from kdtutorial.ranking import scaling

VOCAB, PAD, CLS, SEP = 50, 0, 2, 3

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


def pairs(n: int = 37, seed: int = 0) -> ce.PairMatrix:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 13, n)
    ids = np.full((n, int(lengths.max())), PAD, dtype=np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = [CLS, *rng.integers(4, VOCAB, length - 3), SEP, SEP]
    return ce.PairMatrix(ids, lengths, PAD)


def cross_encoder(seed: int = 1) -> ce.CrossEncoder:
    return ce.CrossEncoder(tiny_bert(VOCAB, seed), dropout=0.0).eval()


def train(model, accelerator=None, n_rows: int = 40, batch_size: int = 4) -> list:
    data = pairs(n_rows, seed=3)
    labels = torch.as_tensor(np.arange(n_rows) % 2, dtype=torch.float32)

    def batches(epoch):
        order = np.random.default_rng(epoch).permutation(n_rows)
        for start in range(0, n_rows, batch_size):
            rows = order[start : start + batch_size]
            ids = torch.as_tensor(data.ids[rows], dtype=torch.long)
            yield rows, (ids, (ids != PAD).long())

    def loss_of(logits, rows):
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[rows].to(logits.device))

    return optim.train_steps(model, batches, loss_of, n_rows=n_rows, epochs=2, batch_size=batch_size, lr=1e-3,
                             weight_decay=0.0, warmup=0.1, device="cpu", progress=False, accelerator=accelerator)


def test_shards_partition_the_rows():
    for n, world in [(10, 3), (2, 4), (0, 2), (7, 1)]:
        shards = [scaling.shard_rows(n, world, r) for r in range(world)]
        assert sorted(np.concatenate(shards).tolist()) == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="rank"):
        scaling.shard_rows(5, 2, 2)


def test_one_process_scores_and_trains_exactly_as_without_accelerate():
    accelerator = scaling.make_accelerator(cpu=True)
    assert accelerator.num_processes == 1
    model, data = cross_encoder(), pairs()
    plain, _ = ce.score_pairs(model, data, batch_size=8)
    sharded, stats = scaling.score_pairs_sharded(accelerator, model, data, batch_size=8)
    assert np.array_equal(plain, sharded) and stats["pairs"] == len(data) and stats["processes"] == 1

    a, b = cross_encoder(), cross_encoder()
    torch.manual_seed(0)
    losses_plain = train(a)
    torch.manual_seed(0)
    losses_accel = train(b, accelerator)
    assert losses_plain == losses_accel and len(losses_plain) == 20
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # leave no process-wide state to later tests


def _two_processes(folder):
    """Runs in each of two processes: score and train, then write what this process saw."""
    torch.set_num_threads(1)
    accelerator = scaling.make_accelerator(cpu=True)
    model, data = cross_encoder(), pairs()
    scores, stats = scaling.score_pairs_sharded(accelerator, model, data, batch_size=8)
    student = cross_encoder(seed=5)
    losses = train(student, accelerator, n_rows=42)  # 11 batches per epoch: 5 for each process, 1 left out
    flat = torch.cat([p.detach().flatten() for p in student.parameters()])
    out = {"rank": accelerator.process_index, "world": accelerator.num_processes, "scores": scores.tolist(),
           "processes": stats["processes"], "steps": len(losses), "weights": flat.tolist()}
    with open(f"{folder}/rank{accelerator.process_index}.json", "w") as f:
        json.dump(out, f)


def test_two_cpu_processes_gather_every_score_and_keep_replicas_identical(tmp_path):
    pytest.importorskip("accelerate")
    # accelerate's CPU launcher forks; fork from a fresh interpreter, not from this one, whose torch thread pools
    # the earlier tests have used (a forked OpenMP pool can hang)
    here = Path(__file__).resolve().parent
    script = (f"import sys; sys.path[:0] = [{str(here)!r}, {str(here.parent)!r}]; import test_scaling; "
              f"from accelerate import debug_launcher; "
              f"debug_launcher(test_scaling._two_processes, args=({str(tmp_path)!r},), num_processes=2)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    expected, _ = ce.score_pairs(cross_encoder(), pairs(), batch_size=8)
    for run in runs:
        assert run["world"] == 2 and run["processes"] == 2
        np.testing.assert_allclose(run["scores"], expected, rtol=0, atol=1e-6)  # each shard batches differently
        assert run["steps"] == 2 * 5  # 2 epochs x 5 of the 11 batches
    assert runs[0]["weights"] == runs[1]["weights"]  # gradients averaged: the replicas never drift apart
    untrained = torch.cat([p.detach().flatten() for p in cross_encoder(seed=5).parameters()]).tolist()
    assert runs[0]["weights"] != untrained
