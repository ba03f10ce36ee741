"""Lesson 07's experiment: every layer-distillation method on one task, the same seeds, chosen on held-out train.

One comparison is a grid ``task x student size x method x seed``. Every cell of it starts from the same
student (the teacher's pretrained encoder cut to its bottom ``m`` layers, as PKD initialises its students: Sun et
al. 2019, §4.1; or, as a variant, random weights), trains it for the same number of steps on the same batches
(the batch order follows the seed, not the method) with :func:`kdtutorial.text.layerdistil.distil_with_layers`,
keeps the epoch that scores best on a held-out part of the training set, and only then scores it once on the
task's labelled GLUE dev set. So two methods differ only in their loss, and a paired comparison by seed
(:func:`kdtutorial.common.statistics.paired`) compares like with like.

``METHODS`` names the eight methods of the lesson: no KD, KD (logits only), PKD-Skip, PKD-Last, TinyBERT's
layer losses, CKD-NO, CKD-PO and ALP-KD, each as ``(loss term, layer map)``, and one variant of ours, ALP-KD with
its dot products scaled by ``sqrt(width)``. :func:`beta_search` trains one method with each weight of a grid (PKD's
released grid for ``beta``) and :func:`chosen_beta` picks the weight on the held-out part of train, never on dev.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from kdtutorial.common.environment import peak_memory_mib, release_memory, reset_peak_memory, seed_everything
from kdtutorial.text import glue
from kdtutorial.text.finetuning import SentenceClassifier, fine_tune, predict
from kdtutorial.text.layerdistil import TeacherBatchCache, distil_with_layers
from kdtutorial.text.layers import layer_map
from kdtutorial.text.optim import optimiser_kernels, to_device
from kdtutorial.common.processes import run_jobs
from kdtutorial.text.students import copy_layers_encoder, encoder_layers
from kdtutorial.text.tokens import padded_batches

__all__ = ["METHODS", "INITS", "REPORTED", "PAPER", "PAPER_AVERAGE", "Task", "Setting", "build_task", "new_student",
           "fine_tune_teacher", "train_and_score", "teacher_cache_budget", "compare_methods", "beta_search",
           "chosen_beta", "alp_attention_map", "saved_activation_bytes", "step_costs"]

#: method -> (term of distil_with_layers, layer map method or None)
METHODS = {"no KD": ("none", None), "KD": ("kd", None), "PKD-Skip": ("pkd", "pkd-skip"),
           "PKD-Last": ("pkd", "pkd-last"), "TinyBERT": ("tinybert", "tinybert"), "CKD-NO": ("ckd", "ckd-no"),
           "CKD-PO": ("ckd", "ckd-po"), "ALP-KD": ("alp", "alp"), "ALP-KD (scaled)": ("alp-scaled", "alp")}
INITS = ("bottom", "random")
#: the metric each task is compared on, as the ALP-KD tables report them (accuracy; Matthews correlation for CoLA)
REPORTED = {"sst2": "accuracy", "rte": "accuracy", "mrpc": "accuracy", "cola": "matthews"}

#: Passban et al. (ALP-KD, AAAI 2021), dev-set scores of BERT students of a 12-layer BERT-base teacher: Table 1
#: (4 layers) and Table 3 (2 layers). "KD" is their RKD (logits only); for 2 layers PKD-Skip is their PKD-6
#: (teacher layer 6) and PKD-Last their PKD-12 (ours uses layer 11, the last one below the output), CKD their only
#: CKD row (listed as CKD-NO here); "teacher" is the 12-layer BERT-base. Their students are not initialised from
#: the teacher.
PAPER = {
    4: {"teacher": {"sst2": 92.67, "rte": 68.23, "mrpc": 86.76, "cola": 57.31},
        "no KD": {"sst2": 88.19, "rte": 61.73, "mrpc": 77.70, "cola": 31.05},
        "KD": {"sst2": 90.37, "rte": 65.34, "mrpc": 79.41, "cola": 29.22},
        "PKD-Skip": {"sst2": 90.14, "rte": 65.70, "mrpc": 80.15, "cola": 32.13},
        "CKD-NO": {"sst2": 90.37, "rte": 66.06, "mrpc": 80.64, "cola": 31.23},
        "CKD-PO": {"sst2": 90.25, "rte": 67.51, "mrpc": 80.39, "cola": 31.95},
        "ALP-KD": {"sst2": 90.37, "rte": 67.15, "mrpc": 80.72, "cola": 33.07}},
    2: {"teacher": {"sst2": 92.67, "rte": 68.23, "mrpc": 86.76, "cola": 57.31},
        "no KD": {"sst2": 85.89, "rte": 57.04, "mrpc": 72.06, "cola": 14.50},
        "KD": {"sst2": 87.39, "rte": 59.21, "mrpc": 73.53, "cola": 24.50},
        "PKD-Skip": {"sst2": 88.65, "rte": 57.40, "mrpc": 73.04, "cola": 22.48},
        "PKD-Last": {"sst2": 88.76, "rte": 57.40, "mrpc": 72.79, "cola": 22.46},
        "CKD-NO": {"sst2": 88.65, "rte": 58.84, "mrpc": 73.04, "cola": 24.69},
        "ALP-KD": {"sst2": 88.88, "rte": 59.57, "mrpc": 73.53, "cola": 24.61}},
}
#: the averages over all eight GLUE tasks the paper reports (Table 1: 4 layers; Table 3: 2 layers)
PAPER_AVERAGE = {4: {"no KD": 74.61, "KD": 76.02, "PKD-Skip": 76.44, "CKD-NO": 76.37, "CKD-PO": 76.73, "ALP-KD": 77.01},
                 2: {"no KD": 63.69, "KD": 66.23, "PKD-Skip": 65.94, "PKD-Last": 66.28, "CKD-NO": 66.54,
                     "ALP-KD": 67.08}}


@dataclass
class Task:
    """One GLUE task tokenised: ``train`` (the part of GLUE train that trains, in a seeded order), ``select``
    (the held-out part of train that chooses the epoch) and ``dev`` (GLUE's labelled dev set, scored once);
    ``train_raw``: the training rows as text (:class:`~kdtutorial.text.glue.GlueData`), in the same order."""

    name: str
    train: object
    train_labels: np.ndarray
    select: object
    select_labels: np.ndarray
    dev: object
    dev_labels: np.ndarray
    train_raw: object = None

    @property
    def metric(self) -> str:
        """The metric the comparison selects and reports on (:data:`REPORTED`)."""
        return REPORTED[self.name]

    def first(self, n: int):
        """The first ``n`` training rows (text, labels): teacher and students draw from the same order."""
        n = min(int(n), len(self.train_labels))
        return self.train.subset(range(n)), self.train_labels[:n]

    def score(self, model, which: str, *, device="cpu", amp: bool = False, batch_size: int = 128) -> dict:
        """The task's metrics (percent) of ``model`` on ``which`` (``"select"`` or ``"dev"``)."""
        text, labels = (self.select, self.select_labels) if which == "select" else (self.dev, self.dev_labels)
        return glue.glue_scores(self.name, predict(model, text, batch_size=batch_size, device=device, amp=amp), labels)


def build_task(name: str, tokenizer, max_length: int, *, select_share: float = 0.1,
               select_sentences: int | None = None, seed: int = 0, root=None, dev_rows: int | None = None) -> Task:
    """Load GLUE task ``name`` (:data:`kdtutorial.text.glue.GLUE_TASKS`), hold out ``select_share`` of its train
    set (at most ``select_sentences`` rows; label-stratified, seeded) for model selection, put the rest in a
    seeded order and tokenise all three. ``dev_rows``: keep only a seeded, label-stratified sample of that many dev
    rows (a quick run's shortcut; ``None``: the whole labelled dev set)."""
    train_all = glue.load_glue(name, "train", root)
    dev = glue.load_glue(name, "dev", root)
    if dev_rows is not None and dev_rows < len(dev):
        dev = glue.held_out(dev, dev_rows / len(dev), seed)[1]
    if select_sentences is not None:
        select_share = min(select_share, select_sentences / len(train_all))
    train, select = glue.held_out(train_all, select_share, seed)
    train = train.subset(np.random.default_rng(seed).permutation(len(train)))
    tok = lambda data: glue.glue_tokens(tokenizer, data, max_length)  # noqa: E731
    return Task(name, tok(train), np.asarray(train.labels), tok(select), np.asarray(select.labels), tok(dev),
                np.asarray(dev.labels), train_raw=train)


def new_student(pretrained_encoder, layers: int, init: str = "bottom", n_classes: int = 2) -> SentenceClassifier:
    """A student classifier of ``layers`` layers: ``"bottom"`` copies the pretrained encoder's embeddings and its
    first ``layers`` layers (PKD's initialisation); ``"random"`` has the same architecture with random weights."""
    if init not in INITS:
        raise ValueError(f"init = {init!r} is not allowed: expected one of {', '.join(INITS)}")
    n = len(encoder_layers(pretrained_encoder))
    if not 1 <= layers <= n:
        raise ValueError(f"student layers = {layers} is not allowed: expected 1 to the teacher's {n}")
    encoder = copy_layers_encoder(pretrained_encoder, range(layers))
    if init == "random":
        encoder = type(encoder)(encoder.config)
    return SentenceClassifier(encoder, n_classes=n_classes)


@dataclass
class Setting:
    """What every run of one comparison shares: the loss weights and the training recipe."""

    T: float = 5.0
    alpha: float = 0.5
    betas: dict = field(default_factory=lambda: {"pkd": 100.0, "tinybert": 1.0, "ckd": 1.0, "alp": 1.0,
                                                 "alp-scaled": 1.0})
    epochs: int = 1
    lr: float = 5e-5
    batch_size: int = 32
    sentences: int = 10**9
    freeze_embeddings: bool = False
    device: str = "cpu"
    amp: bool = False
    #: students' steps replayed from a CUDA graph (``layerdistil.distil_with_layers``), the teacher cache then unused;
    #: TinyBERT's students train eagerly (its loss averages over padding, which a graph's one width would change)
    graphs: bool = False


def fine_tune_teacher(pretrained_encoder, task: Task, *, sentences: int, epochs: int, lr: float, batch_size: int,
                      seed: int, device="cpu", amp: bool = False, freeze_embeddings: bool = False,
                      graphs: bool = False):
    """The teacher: the whole pretrained encoder with a new head, fine-tuned on the first ``sentences`` training
    rows; returns ``(teacher, {"select": metrics, "dev": metrics})``. ``graphs``: as ``finetuning.fine_tune``."""
    import copy

    seed_everything(seed)
    teacher = SentenceClassifier(copy.deepcopy(pretrained_encoder), n_classes=int(task.train_labels.max()) + 1)
    text, labels = task.first(sentences)
    fine_tune(teacher, text, labels, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device=device, amp=amp,
              freeze_embeddings=freeze_embeddings, progress=False, graphs=graphs)
    scores = {w: task.score(teacher, w, device=device, amp=amp) for w in ("select", "dev")}
    teacher.eval()
    release_memory()
    return teacher, scores



def train_and_score(teacher, pretrained_encoder, task: Task, layers: int, method: str, seed: int, setting: Setting,
                    init: str = "bottom", cache: TeacherBatchCache | None = None):
    """Train one student by ``method`` (a key of :data:`METHODS`) and score it; returns ``(record, student,
    distiller)``. The record holds the held-out score of the epoch kept, the dev metrics of that epoch, the
    steps, the wall time and (on a GPU) the peak memory."""
    if method not in METHODS:
        raise ValueError(f"method = {method!r} is not allowed: expected one of {', '.join(METHODS)}")
    term, map_name = METHODS[method]
    n = len(encoder_layers(teacher.encoder))
    lmap = layer_map(map_name, layers, n) if map_name else None
    seed_everything(seed)
    student = new_student(pretrained_encoder, layers, init, n_classes=int(task.train_labels.max()) + 1)
    best = {"score": -float("inf"), "epoch": 0, "state": None}
    s = setting

    def keep_best(epoch):
        score = task.score(student, "select", device=s.device, amp=s.amp)[task.metric]
        if score > best["score"]:
            best.update(score=score, epoch=epoch + 1,
                        state={k: v.detach().to("cpu", copy=True) for k, v in student.state_dict().items()})

    text, labels = task.first(s.sentences)
    graphs = s.graphs and term != "tinybert"
    reset_peak_memory(s.device)
    start = time.perf_counter()
    losses, distiller = distil_with_layers(
        teacher, student, text, labels, term=term, lmap=lmap, T=s.T, alpha=s.alpha, beta=s.betas.get(term, 0.0),
        epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, seed=seed, device=s.device, amp=s.amp,
        freeze_embeddings=s.freeze_embeddings, after_epoch=keep_best, cache=None if graphs else cache,
        progress=False, graphs=graphs)
    seconds, peak = time.perf_counter() - start, peak_memory_mib(s.device)
    student.load_state_dict(best["state"])
    dev = task.score(student, "dev", device=s.device, amp=s.amp)
    record = {"task": task.name, "student_layers": layers, "init": init, "method": method, "seed": seed,
              "epoch": best["epoch"], "selection": best["score"], "dev": dev[task.metric],
              **{f"dev_{k}": v for k, v in dev.items()}, "steps": len(losses), "seconds": seconds,
              "peak_mib": peak, "last_loss": float(np.mean(losses[-10:])) if losses else float("nan")}
    return record, student, distiller


def _grid_job(shared: dict, job) -> tuple:
    """One cell of :func:`compare_methods`' grid: ``(record, ALP-KD's attention map or None)``. ``shared`` holds the
    models, task and setting and, per process, the teacher's batch cache."""
    seed, m, method = job
    cache = shared["cache"]
    if cache is not None and shared.get("cached_seed") != seed:
        cache.clear()  # a new seed, new batches
        shared["cached_seed"] = seed
    record, student, distiller = train_and_score(shared["teacher"], shared["pretrained"], shared["task"], m, method,
                                                 seed, shared["setting"], shared["init"], cache)
    attention = None
    if seed in shared["attention_seeds"] and distiller.term in ("alp", "alp-scaled"):
        s = shared["setting"]
        attention = alp_attention_map(distiller, shared["task"].select, device=s.device, amp=s.amp)
    if shared["keep"] is not None:
        shared["keep"](record, student, distiller)
    del student, distiller
    release_memory()
    return record, attention


def teacher_cache_budget(device) -> int:
    """Bytes of teacher outputs a comparison may keep (``cache_bytes`` of :func:`compare_methods`): 256 MiB on a CPU
    (within Binder's 2 GB), a quarter of the GPU's memory (at most 40 GiB) on CUDA, which leaves room for the worker
    processes' own models and activations (on an 80 GB card, 8 processes with 40 GiB of cache ran out of memory).
    The cache only saves teacher passes: every size gives the same records."""
    device = torch.device(device)
    if device.type != "cuda":
        return 256 << 20
    return min(40 << 30, torch.cuda.get_device_properties(device).total_memory // 4)


def compare_methods(teacher, pretrained_encoder, task: Task, sizes, methods, seeds, setting: Setting,
                    init: str = "bottom", progress: bool = True, keep=None, cache_bytes: int = 0,
                    attention: dict | None = None, attention_seeds=(), workers: int = 1, threads: int | None = None):
    """Every ``size x method x seed`` run on ``task`` (:func:`train_and_score`); returns the records.

    ``cache_bytes > 0`` keeps up to that many bytes of the teacher's outputs
    (:class:`~kdtutorial.text.layerdistil.TeacherBatchCache`): every method and size of a seed sees the same batches,
    so on a CPU the teacher then runs once per batch instead of once per student. ``attention``: a dict that receives
    ALP-KD's learned attention (:func:`alp_attention_map` on the held-out part of train) of every ALP-KD run whose
    seed is in ``attention_seeds``, under ``(task, student layers, method, seed)``. ``keep(record, student,
    distiller)``, when given, sees every trained student before it is dropped (one process only).

    ``workers > 1`` trains that many students at a time, each in a process of its own on the same device
    (:func:`~kdtutorial.common.processes.run_jobs`): a small student's step on a GPU waits for Python to launch its
    kernels. Every run seeds what it draws, so a record does not depend on where it ran (up to a GPU's run-to-run
    variation); its ``seconds`` and ``peak_mib`` are then measured while sharing the device. Each process keeps a
    teacher cache of its own, of ``cache_bytes / workers``, and uses ``threads`` CPU threads (as
    :func:`~kdtutorial.common.processes.run_jobs` takes them)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods {unknown} are not known: expected some of {', '.join(METHODS)}")
    if keep is not None and workers > 1:
        raise ValueError("keep is called with each trained student, which stays in its process: use workers = 1, or "
                         "attention= for ALP-KD's attention")
    # seed by seed: a cache then holds one seed's batches (the batch order follows the seed)
    grid = [(seed, m, method) for seed in seeds for m in sizes for method in methods]
    share = max(1, workers)
    shared = {"teacher": teacher, "pretrained": pretrained_encoder, "task": task, "setting": setting, "init": init,
              "cache": TeacherBatchCache(cache_bytes // share) if cache_bytes else None, "keep": keep,
              "attention_seeds": set(attention_seeds)}
    with tqdm(total=len(grid), desc=f"{task.name}: students", disable=not progress) as bar:
        out = run_jobs(_grid_job, shared, grid, workers=workers, threads=threads, progress=bar)
    if attention is not None:
        for record, weights in out:
            if weights is not None:
                attention[record["task"], record["student_layers"], record["method"], record["seed"]] = weights
    return [record for record, _ in out]


def beta_search(teacher, pretrained_encoder, task: Task, layers: int, method: str, betas, seeds, setting: Setting,
                init: str = "bottom", known=(), progress: bool = True, cache_bytes: int = 0, workers: int = 1):
    """Train ``method`` with each layer-term weight in ``betas`` (e.g. PKD's released grid 10, 100, 500, 1000: Sun et
    al. 2019, sec. 4.2), every other setting and every seed the same; returns the records, each with its ``"beta"``.

    ``known``: records already trained (e.g. by :func:`compare_methods`); those of this task, size, method and init
    at the setting's own weight are reused, not trained again. Choose the weight with :func:`chosen_beta`.
    ``workers``: students trained at a time, as in :func:`compare_methods`."""
    term = METHODS[method][0] if method in METHODS else None
    if term in (None, "none", "kd"):
        raise ValueError(f"method = {method!r} is not allowed: expected a method with a layer term, one of "
                         f"{', '.join(m for m, (t, _) in METHODS.items() if t not in ('none', 'kd'))}")
    this_run = (task.name, layers, method, init)
    same_run = [r for r in known if (r["task"], r["student_layers"], r["method"], r["init"]) == this_run
                and r["seed"] in seeds]  # trained at the setting's own weight
    records = []
    for beta in betas:
        at_beta = replace(setting, betas={**setting.betas, term: float(beta)})
        reused = same_run if float(beta) == setting.betas.get(term) else []
        todo = [x for x in seeds if x not in {r["seed"] for r in reused}]
        fresh = compare_methods(teacher, pretrained_encoder, task, [layers], [method], todo, at_beta, init,
                                progress=progress, cache_bytes=cache_bytes, workers=workers) if todo else []
        records += [{**r, "beta": float(beta)} for r in reused + fresh]
    return records


def chosen_beta(records) -> float:
    """The weight of :func:`beta_search`'s records with the best mean held-out (``"selection"``) score; a tie goes to
    the smaller weight. The dev scores play no part."""
    means = {}
    for r in records:
        means.setdefault(r["beta"], []).append(r["selection"])
    return max(sorted(means), key=lambda b: float(np.mean(means[b])))


@torch.no_grad()
def alp_attention_map(distiller, text, *, batch_size: int = 64, device="cpu", amp: bool = False) -> np.ndarray:
    """ALP-KD's attention weights ``alpha_jk`` (student layer ``j`` over teacher layer ``k``), averaged over the
    sentences of ``text``: an ``[m, n]`` array whose rows sum to 1."""
    if distiller.term not in ("alp", "alp-scaled"):
        raise ValueError(f"the distiller's term is {distiller.term!r}: only ALP-KD learns attention over layers")
    distiller.to(device).eval()
    total, count = 0.0, 0
    for _, batch in padded_batches(text, batch_size):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and torch.device(device).type == "cuda"):
            distiller(to_device(batch["input_ids"], device), to_device(batch["attention_mask"], device))
        w = distiller.alp_weights.float()  # [m, batch, n]
        total = total + w.sum(1).cpu()
        count += w.shape[1]
    return (total / count).numpy()


def saved_activation_bytes(step) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while ``step()`` runs a forward pass (each
    storage counted once): the memory a method's loss adds to a training step, on any device."""
    seen, total = set(), [0]

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total[0] += key[1]
        # not ``t`` itself: a saved output that is the tensor itself refers to its own graph node, a cycle through
        # autograd's C++ side that the garbage collector cannot see, so every measured graph would stay alive
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return total[0]


def step_costs(teacher, pretrained_encoder, task: Task, layers: int, methods, setting: Setting, *, steps: int = 5,
               rounds: int = 3, seed: int = 0):
    """Time per training step and activation memory of every method, measured side by side: each round runs every
    method in turn on the same batch (a fresh student, one untimed warm-up step, then ``steps`` timed steps), so
    machine noise hits them alike; the best round counts. One student is alive at a time (Binder's 2 GB). Returns a
    list of dicts (method, ms per step, saved activations in MiB, peak GPU memory in MiB; NaN on a CPU)."""
    from kdtutorial.text.layerdistil import LayerDistiller, layer_objective

    device = torch.device(setting.device)
    text, _ = task.first(setting.batch_size)
    _, batch = next(padded_batches(text, setting.batch_size))
    ids, mask = to_device(batch["input_ids"], device), to_device(batch["attention_mask"], device)
    y = to_device(torch.as_tensor(task.train_labels[: len(ids)], dtype=torch.long), device)
    n = len(encoder_layers(teacher.encoder))
    best, saved, peaks = {m: float("inf") for m in methods}, {}, {}
    for round_ in range(rounds):
        for method in methods:
            term, map_name = METHODS[method]
            seed_everything(seed)
            student = new_student(pretrained_encoder, layers, "bottom", int(task.train_labels.max()) + 1)
            if setting.freeze_embeddings:
                student.encoder.embeddings.requires_grad_(False)
            d = LayerDistiller(teacher, student, term, layer_map(map_name, layers, n) if map_name else None).to(device)
            d.train()
            opt = torch.optim.AdamW([p for p in d.parameters() if p.requires_grad], lr=setting.lr,
                                    **optimiser_kernels(device))  # per-tensor on a CPU: no copies of every weight
            beta = setting.betas.get(term, 0.0)

            def loss_of_batch():
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=setting.amp and device.type == "cuda"):
                    logits = d(ids, mask)
                return layer_objective(logits.float(), y, d, T=setting.T, alpha=setting.alpha, beta=beta)

            def step():
                opt.zero_grad(set_to_none=True)
                loss_of_batch().backward()
                opt.step()

            step()  # warm-up (and the optimiser's buffers)
            if round_ == 0:
                saved[method] = saved_activation_bytes(loss_of_batch)
            reset_peak_memory(device)
            start = time.perf_counter()
            for _ in range(steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best[method] = min(best[method], (time.perf_counter() - start) / steps)
            peaks[method] = peak_memory_mib(device)
            del d, student, opt
            release_memory()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return [{"method": m, "ms_per_step": 1000 * best[m], "saved_activations_mib": saved[m] / 2**20,
             "peak_gpu_mib": peaks[m]} for m in methods]
