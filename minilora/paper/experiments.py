"""One harness for every table of the paper's section 5 (``minilora reproduce``).

A ``Run`` is everything that decides one fine-tuning run: the method and its
settings (``minilora.paper.baselines``), the task, the seed, the learning rate and
the step budget. ``execute(run)`` trains it from the shipped base model and
returns its record: the test score (exact match for sql, accuracy for nli),
the validation loss, trainable and total parameters, the median time of a
training step, and the bytes of training state and of the task's checkpoint.

Records are cached on disk, one JSON file per run named by a hash of its
settings and written atomically (temporary name, then rename), so a re-run
computes only what is missing and an interrupted one leaves no half-written
entry. The records of the published tables are committed in the package
(``minilora/paper/records/``, ``RECORDS``) and read before the cache, so
``minilora reproduce ... --budget full`` rebuilds them without training. A
record says where and when it ran (date, host, CPU, numpy, device).

Every run is repeatable bit for bit on the CPU for its seed: the seed
draws the new modules' initialisation and the batches; the data splits are
fixed (task seed 0), so every run of a task is scored on the same questions.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from minilora import backend
from minilora.paper.baselines import check_method
from minilora.work import io
from minilora.work.tasks import TASK_VERSIONS, TASKS

BASE = "char-small"
# Every run of a task sees the same splits, whatever it scores: N_TEST test questions
# (drawn first), then N_VAL validation questions (the validation loss during training
# and the learning-rate sweep's scores), then the training examples.
N_TEST = 1000
N_VAL = 1000
EVAL_BATCHES = 16  # batches of the validation loss (the same fixed draw at every evaluation)
# Committed records (package data): read before the cache, so a table is rebuilt from them.
RECORDS = Path(__file__).parent / "records"
METRICS = {"sql": "exact match", "nli": "accuracy"}


def _plain(value):
    """Settings as JSON-stable values: tuples and lists become tuples of plain values."""
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass(frozen=True)
class Run:
    """The settings of one run; ``key()`` names its cache entry."""

    method: str
    task: str
    settings: tuple = ()  # sorted (name, value) pairs; a dict is accepted and sorted
    seed: int = 0
    steps: int = 400
    batch_size: int = 16
    lr: float = 2e-2
    n_train: int = 4000
    n_eval: int = 200  # questions scored (0: none)
    split: str = "test"  # scored on: "test" for the tables, "val" to choose learning rates
    # a shipped base's name, or "<checkpoint path>@<digest>" (minilora.paper.user_base)
    base: str = BASE
    # validation loss every eval_every steps and the best checkpoint scored (0: the last step)
    eval_every: int = 0
    n_val_eval: int = 0  # validation questions scored too (the learning-rate choice reads them)

    def __post_init__(self):
        pairs = dict(self.settings)
        check_method(self.method, pairs)  # unknown method or setting: ValueError
        object.__setattr__(
            self, "settings", tuple(sorted((k, _plain(v)) for k, v in pairs.items()))
        )
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid tasks: {', '.join(TASKS)}")
        for name in ("steps", "batch_size", "n_train"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"Run.{name}={getattr(self, name)!r} must be an integer >= 1")
        for name, most in (("n_eval", N_TEST), ("eval_every", self.steps), ("n_val_eval", N_VAL)):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= most:
                raise ValueError(f"Run.{name}={value!r} must be an integer in [0, {most}]")
        if self.split not in ("test", "val"):
            raise ValueError(f"Run.split={self.split!r}: expected 'test' or 'val'")
        if not self.lr > 0:
            raise ValueError(f"Run.lr={self.lr!r} must be > 0")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["settings"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.settings}
        return d

    def key(self) -> str:
        """``method-task-seedS-<hash>``: the hash of every setting and of the task's version."""
        d = self.to_dict()
        d["task_version"] = TASK_VERSIONS[self.task]
        digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()
        return f"{self.method}-{self.task}-seed{self.seed}-{digest[:16]}"

    def label(self) -> str:
        """A short human description: the method and its settings."""
        from minilora.paper.baselines import LABELS

        parts = []
        for k, v in self.settings:
            if k == "targets":
                parts.append("+".join(f"W{t}" for t in v))
            elif v is not None:
                parts.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
        return LABELS[self.method] + (f" ({', '.join(parts)})" if parts else "")


# --------------------------------------------------------------------------- one run


def score(model, tokenizer, task: str, examples) -> float:
    """Exact match (sql) or accuracy (nli) of greedy completions on ``examples``."""
    from minilora.work.finetune import complete
    from minilora.work.tasks import accuracy, exact_match

    predictions = complete(model, tokenizer, [p for p, _ in examples])
    answers = [a for _, a in examples]
    return (accuracy if task == "nli" else exact_match)(predictions, answers)


def execute(run: Run, progress: bool = False) -> dict:
    """Train ``run`` from its base model and measure it: the record to cache.

    ``run.base`` is a shipped base's name or your checkpoint's ``"<path>@<digest>"``
    (``minilora.paper.user_base``); the task is encoded with that base's own tokenizer."""
    from minilora.lora import count_parameters
    from minilora.paper.baselines import apply_method
    from minilora.paper.user_base import load_base
    from minilora.work.finetune import finetune_recipe, task_batcher
    from minilora.work.tasks import make_task
    from minilora.work.train import TrainingDiverged, train

    started = time.perf_counter()
    gpt, tokenizer, _ = load_base(run.base)
    task = make_task(run.task, n_train=run.n_train, n_val=N_VAL, n_test=N_TEST, seed=0)
    scored = (task.test if run.split == "test" else task.val)[: run.n_eval]
    model = apply_method(gpt, run.method, dict(run.settings), np.random.default_rng(run.seed))
    counts = count_parameters(model)
    keep = keeps_adapter(run)
    initial = {f"{n}.init": p.numpy().copy() for n, p in model.named_parameters()
               if keep and ".lora_A." in n}  # fmt: skip
    ratio = dict(run.settings).get("b_lr_ratio") or 1.0  # LoRA+: B's rate over A's
    config = finetune_recipe(
        run.steps, run.lr, run.batch_size, run.seed, EVAL_BATCHES, progress, run.eval_every, ratio
    )
    get_batch = task_batcher(task, tokenizer, run.batch_size, gpt.config.block_size)
    try:
        result = train(model, get_batch, config)
    except TrainingDiverged as err:  # before any evaluation: nothing worth scoring
        if not run.eval_every:
            raise
        return _diverged_record(run, model, str(err), time.perf_counter() - started)
    trainable = [p for p in model.parameters() if p.requires_grad]
    tensors = {n: p.numpy() for n, p in model.named_parameters() if keep and p.requires_grad}
    weights = sum(int(p.data.nbytes) for p in trainable)
    grads = sum(int(p.grad.nbytes) for p in trainable if p.grad is not None)
    t0 = time.perf_counter()
    test_score = score(model, tokenizer, run.task, scored) if run.n_eval else None
    val_questions = task.val[: run.n_val_eval]
    val_score = score(model, tokenizer, run.task, val_questions) if run.n_val_eval else None
    return {
        "key": run.key(),
        "run": {**run.to_dict(), "task_version": TASK_VERSIONS[run.task]},
        "label": run.label(),
        "metric": METRICS[run.task],
        "score": test_score,  # on run.n_eval questions of run.split
        "val_score": val_score,  # on the first run.n_val_eval validation questions
        # the validation loss of the weights scored: the best checkpoint's with eval_every
        "val_loss": result.best_val_loss if run.eval_every else result.history[-1]["val_loss"],
        "best_step": result.best_step if run.eval_every else run.steps,
        "curve": [
            {k: h[k] for k in ("step", "train_loss", "val_loss")} for h in result.history
        ],  # the learning curve: validation loss against step
        "final_train_loss": result.final_train_loss,
        "diverged": result.diverged,  # None, or where training stopped (best weights scored)
        "trainable": counts.trainable,
        "total": counts.total,
        "step_ms": 1000 * result.step_seconds,
        "train_seconds": result.seconds,
        "eval_seconds": time.perf_counter() - t0,
        "seconds": time.perf_counter() - started,
        # what training holds beyond the frozen model: gradients and AdamW's m and v
        "state_bytes": grads + 2 * weights,
        "checkpoint_bytes": weights,  # what a task's checkpoint must store
        "trained_digest": hashlib.sha256(
            b"".join(p.numpy().tobytes() for p in trainable)
        ).hexdigest()[:16],
        **where_and_when(backend.device_of(gpt.wte.weight.data)),
        **({"_tensors": {**tensors, **initial}} if keep else {}),  # Cache.put writes them apart
    }


def keeps_adapter(run: Run) -> bool:
    """Whether a run's trained adapter is kept beside its record, for section 7's analyses.

    LoRA on Wq and Wv at r = 4, 8 and 64 under the protocol (validation during training):
    the ranks Figures 3 and 4 and Table 7 compare. The file holds A and B as trained (the
    best checkpoint) and each A as initialised (``<name>.init``), the null that shows how much
    of A is still its random start. At most about 0.8 MiB per run (r = 64).
    """
    settings = dict(run.settings)
    return (
        run.method == "lora" and run.eval_every > 0 and settings.get("r") in (4, 8, 64)
        and tuple(settings.get("targets", ())) == ("q", "v")
    )  # fmt: skip


def _diverged_record(run: Run, model, why: str, seconds: float) -> dict:
    """The record of a run that diverged before its first evaluation: no scores."""
    from minilora.lora import count_parameters

    counts = count_parameters(model)
    return {
        "key": run.key(),
        "run": {**run.to_dict(), "task_version": TASK_VERSIONS[run.task]},
        "label": run.label(),
        "metric": METRICS[run.task],
        "score": None,
        "val_score": None,
        "val_loss": None,
        "best_step": 0,
        "curve": [],
        "diverged": why,
        "trainable": counts.trainable,
        "total": counts.total,
        "seconds": seconds,
        **where_and_when(backend.device_of(model.wte.weight.data)),
    }


def cpu_name() -> str:
    """The processor's model name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    threads = os.environ.get("OMP_NUM_THREADS") or os.environ.get("OPENBLAS_NUM_THREADS")
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs"
        f"{f', {threads} BLAS threads' if threads else ''}, Python "
        f"{platform.python_version()}, numpy {np.__version__}"
    )


def where_and_when(device: str = "cpu") -> dict:
    """What a record says about where and when it ran (``device``: "cpu" or "cuda")."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "host": platform.node(),
        "cpu": cpu_name(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": device,
    }


# --------------------------------------------------------------------------- the cache


@dataclass
class Cache:
    """Run records as ``directory/<run key>.json``, each written atomically."""

    directory: Path
    hits: int = field(default=0, init=False)

    def __post_init__(self):
        self.directory = Path(self.directory)

    def path(self, run: Run) -> Path:
        return self.directory / f"{run.key()}.json"

    def get(self, run: Run) -> dict | None:
        path = self.path(run)
        if not path.is_file():
            return None
        try:
            record = io.read_json(path)
        except io.CheckpointError:
            return None  # unreadable: computed again (and replaced)
        return record if record.get("key") == run.key() else None

    def put(self, run: Run, record: dict) -> None:
        """Write the record; its arrays (``_tensors``), if any, go to ``<key>.safetensors``."""
        tensors = record.pop("_tensors", None)
        if tensors is not None:
            from safetensors.numpy import save

            plain = {k: np.ascontiguousarray(v) for k, v in tensors.items()}  # memory as laid
            io.write_atomic(self.tensors_path(run), save(plain))
            record["adapter_file"] = self.tensors_path(run).name
        io.write_json(self.path(run), record)

    def tensors_path(self, run: Run) -> Path:
        return self.directory / f"{run.key()}.safetensors"

    def tensors(self, run: Run) -> dict | None:
        """The arrays kept beside a run's record ({name: array}), or None."""
        from safetensors.numpy import load_file

        path = self.tensors_path(run)
        return load_file(path) if path.is_file() else None


def _execute_into(args) -> dict:
    """Worker: run one and write its record (so a killed pool keeps what finished)."""
    run, directory = args
    record = execute(run)
    Cache(directory).put(run, record)
    return record


JOBS = 1  # worker processes for missing runs when run_all is not told (reproduce --jobs)
ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run_all(
    runs,
    cache_dir,
    progress: bool = True,
    jobs: int | None = None,
    desc: str = "runs",
    read_first=None,
) -> list:
    """The records of ``runs`` (in order): recorded ones read, the others executed and cached.

    Records are read from ``read_first`` (default: the committed records, ``RECORDS``)
    and then from ``cache_dir``; what is missing is executed and written to ``cache_dir``.

    ``jobs`` > 1 (default: ``JOBS``) executes missing runs in that many worker processes,
    each with one BLAS thread unless the environment says otherwise (each run is still
    repeatable: it depends on its own settings alone).
    """
    jobs = JOBS if jobs is None else jobs
    from tqdm.auto import tqdm

    cache = Cache(cache_dir)
    first = [RECORDS] if read_first is None else list(read_first)
    readers = [Cache(d) for d in first if Path(d).resolve() != cache.directory.resolve()]
    readers.append(cache)
    unique = list(dict.fromkeys(runs))
    records = {r: next((x for c in readers if (x := c.get(r)) is not None), None) for r in unique}
    missing = [r for r in unique if records[r] is None]
    bar = tqdm(
        total=len(unique), initial=len(unique) - len(missing), desc=desc, unit="run",
        disable=not progress,
    )  # fmt: skip
    if jobs > 1 and len(missing) > 1:
        import multiprocessing

        unset = [name for name in ONE_THREAD if name not in os.environ]
        os.environ.update({name: "1" for name in unset})  # the workers inherit it at spawn
        try:
            with multiprocessing.get_context("spawn").Pool(min(jobs, len(missing))) as pool:
                work = [(r, cache.directory) for r in missing]
                for record in pool.imap_unordered(_execute_into, work):
                    records[next(r for r in missing if r.key() == record["key"])] = record
                    bar.update()
        finally:
            for name in unset:
                os.environ.pop(name, None)
    else:
        for r in missing:
            bar.set_postfix_str(f"{r.label()}, {r.task}, seed {r.seed}")
            records[r] = execute(r)
            cache.put(r, records[r])
            bar.update()
    bar.close()
    return [records[r] for r in runs]


__all__ = [
    "BASE", "METRICS", "N_TEST", "N_VAL", "RECORDS", "Cache", "Run", "execute", "run_all", "score",
]  # fmt: skip
