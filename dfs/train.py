"""One trainer for every model in dfs: the 2-D toy, autoencoders, latent and pixel diffusion, the face swap.

A model plugs in through a *loss function* ``loss_fn(model, batch, step) -> loss`` (a scalar tensor, or a dict
with ``"loss"`` and any other numbers to log) and a *data source*: either a callable ``data(step, generator)``
returning a batch, or any iterable (a DataLoader), cycled. Everything else lives here:

* several optimisers (a GAN's generator and discriminator): pass ``optimizers={"g": ..., "d": ...}`` and a *step
  function* ``step_fn(trainer, batch, step) -> logs`` instead of ``loss_fn``; it calls
  ``trainer.backward_step(loss, "g")`` (zero_grad, backward through accelerate, clipping, step) once per optimiser,
  in the order it chooses. Every optimiser's state goes into the checkpoint, and ``ema_module="g_net"`` keeps the
  EMA of one sub-module only (the generator);

* devices and mixed precision through 🤗 ``accelerate`` (CPU, one GPU or several with no code change; bf16 on GPU);
* an EMA copy of the weights (``trainer.ema_model``);
* checkpoints as safetensors, written atomically (a temporary folder renamed into place), so a run killed at
  any moment resumes from the last complete checkpoint with ``TrainConfig(resume=True)``;
* exact resume: every step's randomness is a function of ``(seed, step)``, so an interrupted and resumed run
  ends with the same weights as an uninterrupted one (tested in ``tests/test_train.py``);
* a progress bar with loss and it/s, and optional wandb logging (offline-safe: ``WANDB_MODE=offline``);
* data parallelism that does not change the numbers: launched on W processes (``accelerate launch
  --num_processes W``; on CPUs with the gloo backend), every process builds the step's whole batch from the step's
  seed and keeps its B/W rows (:func:`shard_batch`), and the losses draw t, ε and the condition dropout for the whole
  batch (``dfs.device.batch_randn`` & co.), so example k of step n gets the same data and noise whatever W is.  DDP
  averages the W gradients of the per-process means, which is the gradient of the whole batch's mean: a run on W
  processes follows the 1-process trajectory up to floating-point summation order (``tests/test_distributed.py``).
  Only the main process writes checkpoints; any world size resumes from any other's.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from .device import batch_shard
from .smoke import cap

LossFn = Callable[[torch.nn.Module, Any, int], "torch.Tensor | dict"]
StepFn = Callable[["Trainer", Any, int], dict]
CHECKPOINT_PREFIX = "step_"


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64              # for data callables that read it; the trainer itself does not batch
    lr: float = 1e-3
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0             # linear learning-rate warm-up
    grad_clip: float | None = 1.0     # max global grad norm; None turns clipping off
    ema_decay: float | None = 0.999   # None: no EMA copy
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0         # steps between checkpoints; 0: only at the end (when a dir is given)
    keep_checkpoints: int = 2
    resume: bool = True               # continue from the newest complete checkpoint in checkpoint_dir
    log_every: int = 50
    progress: bool = True
    mixed_precision: str = "no"       # "no" | "bf16" | "fp16" (accelerate's names)
    device: str | None = None         # None: accelerate decides (CUDA when present); "cpu" forces the CPU
    wandb_project: str | None = field(default=None, metadata={
        "flag": "--wandb", "metavar": "PROJECT",
        "help": "log losses, learning rate, sample grids and the evaluation row to this wandb project (offline "
                "unless WANDB_MODE says otherwise; needs pip install 'dfs[wandb]')"})
    extra: dict = field(default_factory=dict)  # anything a caller wants stored with the checkpoints

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"steps must be ≥ 0, got {self.steps}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        if self.checkpoint_every < 0 or self.log_every <= 0:
            raise ValueError("checkpoint_every must be ≥ 0 and log_every > 0")


def add_wandb_argument(parser) -> None:
    """The ``--wandb PROJECT`` flag of every training command (``dfs train-swap``, ``dfs prune``, ``dfs
    personalize``), made from :class:`TrainConfig`'s ``wandb_project`` field (its one definition); it sets
    ``args.wandb_project``."""
    f = TrainConfig.__dataclass_fields__["wandb_project"]
    parser.add_argument(f.metadata["flag"], dest=f.name, default=None, metavar=f.metadata["metavar"],
                        help=f.metadata["help"])


def step_seed(seed: int, step: int) -> int:
    """The seed of one training step: a function of (run seed, step) only, which makes resume exact."""
    return (seed * 1_000_003 + step) % (2**63 - 1)


def seed_step(seed: int) -> None:
    """``torch.manual_seed`` for the generators a step can use: the CPU one and, once initialised, CUDA's (and MPS's).

    ``torch.manual_seed`` itself also queues lazy seeds for backends that are not initialised, formatting a stack
    trace for each (~0.3 ms per call on a CPU): too much for every step of a small model.
    """
    torch.random.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    if torch.backends.mps.is_available():
        torch.mps.manual_seed(seed)


def _cycle(iterable: Iterable, skip: int):
    """Cycle an iterable for ever, skipping the first ``skip`` items (those a resumed run already used)."""
    n = 0
    while True:
        empty = True
        for item in iterable:
            empty = False
            if n >= skip:
                yield item
            n += 1
        if empty:
            raise ValueError("the training data iterable is empty")


def shard_batch(batch, rank: int, world: int):
    """Process ``rank``'s rows ``rank·B/W … (rank+1)·B/W − 1`` of every tensor of a whole batch (leading dimension B,
    which W must divide); other entries are passed through.  W = 1 returns the batch itself."""
    if world == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        if batch.ndim == 0:
            return batch
        if batch.shape[0] % world:
            raise ValueError(f"a batch of {batch.shape[0]} examples cannot be split evenly over {world} processes: "
                             f"make the batch size a multiple of {world}")
        n = batch.shape[0] // world
        return batch[rank * n:(rank + 1) * n]
    if isinstance(batch, (list, tuple)):
        return type(batch)(shard_batch(b, rank, world) for b in batch)
    if isinstance(batch, dict):
        return {k: shard_batch(v, rank, world) for k, v in batch.items()}
    return batch


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


class Trainer:
    """Train ``model`` by minimising ``loss_fn`` over ``data`` (see the module docstring).

    With ``optimizers`` (a dict name -> optimiser over parts of ``model``) and ``step_fn`` the step is the caller's:
    ``step_fn(trainer, batch, step)`` returns a dict of numbers to log and calls :meth:`backward_step` for each
    optimiser.  Each optimiser keeps its own learning rate (the warm-up scales it); ``ema_module`` names the
    sub-module whose EMA is kept (``None``: the whole model).
    """

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn | None, data, config: TrainConfig | None = None,
                 optimizer: torch.optim.Optimizer | None = None, *,
                 optimizers: dict[str, torch.optim.Optimizer] | None = None, step_fn: StepFn | None = None,
                 ema_module: str | None = None):
        from accelerate import Accelerator, DistributedDataParallelKwargs

        if (loss_fn is None) == (step_fn is None):
            raise ValueError("pass exactly one of loss_fn (one optimiser, the trainer's step) and step_fn "
                             "(your own step, e.g. a GAN's two optimisers)")
        if optimizers is not None and (optimizer is not None or step_fn is None or not optimizers):
            raise ValueError("optimizers={name: optimiser, ...} needs a step_fn (which steps each of them) and "
                             "replaces optimizer=")
        self.config = cfg = config or TrainConfig()
        # several processes without CUDA (accelerate launch / torchrun on CPUs): accelerate's MULTI_CPU, gloo
        several_on_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
        # a step function's forward passes each use part of the model (a GAN's discriminator pass leaves the
        # generator out), which DDP must be told
        ddp = DistributedDataParallelKwargs(find_unused_parameters=step_fn is not None)
        self.accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=(cfg.device == "cpu" or several_on_cpu),
                                       kwargs_handlers=[ddp])
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.device = self.accelerator.device
        self.loss_fn, self.step_fn, self.data = loss_fn, step_fn, data
        torch.manual_seed(cfg.seed)
        self._named = optimizers is not None   # checkpoint format: optimizers.pt {name: state} vs optimizer.pt
        if optimizers is None:
            optimizers = {"model": optimizer or torch.optim.AdamW(
                [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=cfg.adam_betas,
                weight_decay=cfg.weight_decay)}
        names = list(optimizers)
        if self.world > 1 and self.device.type == "cuda":
            # batch-norm statistics over the whole batch, as on one process (FaceShifter's attribute encoder has
            # BatchNorm).  SyncBatchNorm needs GPUs: on CPUs each process normalises its own share, the one
            # difference from a 1-process run (bounded in tests/test_distributed.py)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model, *opts = self.accelerator.prepare(model, *optimizers.values())
        self.optimizers: dict[str, torch.optim.Optimizer] = dict(zip(names, opts))
        self.optimizer = opts[0] if len(opts) == 1 else None   # the single optimiser (None with several)
        # learning rates before warm-up: the config's for the single-optimiser API, each group's own otherwise
        self._base_lrs = {n: [cfg.lr if not self._named else g["lr"] for g in o.param_groups]
                          for n, o in self.optimizers.items()}
        raw = self.accelerator.unwrap_model(self.model)
        self.ema_module = ema_module
        if ema_module is not None:
            raw.get_submodule(ema_module)   # AttributeError early when the name is wrong
        self._ema = None
        if cfg.ema_decay is not None:
            self._ema = copy.deepcopy(self._ema_source()).eval().requires_grad_(False)
        self.step = 0
        self.history: list[dict] = []
        self._wandb = None
        if cfg.checkpoint_dir and cfg.resume:
            latest = latest_checkpoint(cfg.checkpoint_dir)
            if latest is not None:
                self.load_checkpoint(latest)

    # -- weights --------------------------------------------------------------------------------------
    @property
    def raw_model(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _ema_source(self) -> torch.nn.Module:
        raw = self.raw_model
        return raw if self.ema_module is None else raw.get_submodule(self.ema_module)

    @property
    def ema_model(self) -> torch.nn.Module:
        """The EMA weights (the live model when EMA is off); of the ``ema_module`` sub-module when one is named."""
        return self._ema if self._ema is not None else self._ema_source()

    @torch.no_grad()
    def _update_ema(self):
        # Warm-up as in Ho et al.'s code: decay = min(decay, (1 + n) / (10 + n)), so early averages are short.
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        source = self._ema_source()
        ema_p = [p for p in self._ema.parameters()]
        live_p = [p.detach() for p in source.parameters()]
        torch._foreach_lerp_(ema_p, live_p, 1 - decay)
        for b_ema, b in zip(self._ema.buffers(), source.buffers()):
            b_ema.copy_(b)

    # -- the loop ---------------------------------------------------------------------------------------
    def _batches(self):
        """This process's share of each step's batch: the whole batch (built from the step's seed by a data
        callable, or the next item of an iterable, identical in every process) cut by :func:`shard_batch`."""
        if callable(self.data) and not isinstance(self.data, Iterable):
            while True:
                g = torch.Generator().manual_seed(step_seed(self.config.seed, self.step))
                yield shard_batch(self.data(self.step, g), self.rank, self.world)
        else:
            for batch in _cycle(self.data, skip=self.step):
                yield shard_batch(batch, self.rank, self.world)

    def _lr(self) -> float:
        w = self.config.warmup_steps
        return self.config.lr * (min(1.0, (self.step + 1) / w) if w > 0 else 1.0)

    def _set_lrs(self) -> None:
        w = self.config.warmup_steps
        factor = min(1.0, (self.step + 1) / w) if w > 0 else 1.0
        for name, opt in self.optimizers.items():
            for group, base in zip(opt.param_groups, self._base_lrs[name]):
                group["lr"] = base * factor

    def backward_step(self, loss: torch.Tensor, optimizer: str = "model") -> None:
        """One optimiser's update from ``loss`` (for step functions): zero its gradients, backward through
        accelerate, clip its parameters' global norm to ``grad_clip``, step.  Gradients that ``loss`` leaves on
        other optimisers' parameters are cleared by their own ``backward_step``."""
        if optimizer not in self.optimizers:
            raise KeyError(f"no optimiser {optimizer!r}; this trainer has {sorted(self.optimizers)}")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the {optimizer} loss became {loss.item()} at step {self.step}; lower the "
                                     f"learning rate or check the data")
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if self.config.grad_clip is not None:
            params = [p for g in opt.param_groups for p in g["params"]]
            self.accelerator.clip_grad_norm_(params, self.config.grad_clip)
        opt.step()

    def train_step(self, batch) -> dict:
        cfg = self.config
        self.model.train()
        self._set_lrs()
        if self.step_fn is not None:
            with self.accelerator.autocast():
                out = self.step_fn(self, batch, self.step)
            self.step += 1
            if self._ema is not None:
                self._update_ema()
            return self._logged({k: v for k, v in out.items() if not isinstance(v, torch.Tensor) or v.numel() == 1})
        with self.accelerator.autocast():
            out = self.loss_fn(self.model, batch, self.step)
        out = out if isinstance(out, dict) else {"loss": out}
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at step {self.step}; lower the learning rate "
                                     f"(now {self._lr():g}) or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if cfg.grad_clip is not None:
            self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        if self._ema is not None:
            self._update_ema()
        return self._logged(out)

    def _logged(self, out: dict) -> dict:
        """Numbers to log: tensors as floats, averaged over the processes (each holds the mean of its equal share
        of the batch, so the average is the whole batch's mean, as in a 1-process run)."""
        tensors = {k: v.detach().float().reshape(()) for k, v in out.items() if isinstance(v, torch.Tensor)}
        if tensors and self.world > 1:
            stacked = self.accelerator.reduce(torch.stack(list(tensors.values())), reduction="mean")
            tensors = dict(zip(tensors, stacked))
        return {k: (tensors[k].item() if k in tensors else v) for k, v in out.items()}

    def fit(self, steps: int | None = None) -> list[dict]:
        """Train until ``steps`` (default ``config.steps``) total steps; returns the logged history.

        Ctrl-C (or a kill that Python sees as KeyboardInterrupt) writes a checkpoint first when a
        checkpoint_dir is set, then re-raises: nothing trained is lost.
        """
        cfg = self.config
        total = cap(cfg.steps if steps is None else steps, "max_train_steps")   # DFS_SMOKE=1: a couple of steps
        self._start_wandb()
        bar = tqdm(total=total, initial=self.step, desc="training", leave=False,
                   disable=not cfg.progress or not self.accelerator.is_main_process,
                   dynamic_ncols=True)
        batches = self._batches()
        t0, window = time.perf_counter(), []
        try:
            while self.step < total:
                seed_step(step_seed(cfg.seed, self.step))
                batch = _to_device(next(batches), self.device)
                with batch_shard(self.rank, self.world):
                    logs = self.train_step(batch)
                window.append(logs)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == total:
                    row = {"step": self.step, "seconds": round(time.perf_counter() - t0, 3), "lr": self._lr()}
                    if self._named:
                        row.update({f"lr_{n}": o.param_groups[0]["lr"] for n, o in self.optimizers.items()})
                    row.update({k: sum(w[k] for w in window) / len(window) for k in window[0]
                                if isinstance(window[0][k], (int, float))})
                    window = []
                    self.history.append(row)
                    shown = [k for k in row if "loss" in k][:3]
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in shown})
                    if self._wandb is not None:
                        self._wandb.log(row, step=self.step)
                if cfg.checkpoint_dir and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            if cfg.checkpoint_dir and self.world == 1:   # several processes cannot agree on a last write: the
                # run resumes from its last periodic checkpoint
                path = self.save_checkpoint()
                bar.write(f"interrupted at step {self.step}: checkpoint written to {path}; run again to resume")
            raise
        finally:
            bar.close()
        if cfg.checkpoint_dir and (not self.history or latest_step(cfg.checkpoint_dir) != self.step):
            self.save_checkpoint()
        return self.history

    def _start_wandb(self):
        if self.config.wandb_project and self._wandb is None and self.accelerator.is_main_process:
            try:
                import wandb
            except ImportError:
                raise ImportError("--wandb / wandb_project needs wandb: pip install 'dfs[wandb]'") from None
            self._wandb = wandb.init(project=self.config.wandb_project, config=asdict(self.config),
                                     mode=os.environ.get("WANDB_MODE", "offline"), reinit="finish_previous")

    def log_wandb(self, values: dict) -> None:
        """Log more to this run's wandb run (when one is open) at the current step: numbers, and images given as
        (H, W, 3) uint8 arrays or (B, 3, H, W) tensors in [−1, 1] (shown as one grid): the sample grids and the
        evaluation row the callers add after training."""
        if self._wandb is None:
            return
        import wandb
        out = {}
        for k, v in values.items():
            if isinstance(v, torch.Tensor) and v.ndim == 4:
                from torchvision.utils import make_grid
                v = ((make_grid(v.detach().float().cpu(), nrow=min(8, len(v))) + 1) * 127.5).clamp(0, 255)
                v = v.byte().permute(1, 2, 0).numpy()
            out[k] = wandb.Image(v) if getattr(v, "ndim", 0) == 3 else v
        self._wandb.log(out, step=self.step)

    def finish_wandb(self) -> None:
        """Close this trainer's wandb run (its files are complete afterwards); a no-op without one."""
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    # -- checkpoints ------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write ``<checkpoint_dir>/step_NNNNNNN/`` atomically and prune old ones; returns its path.  With several
        processes only the main one writes (their weights are identical), and all wait until it has."""
        root = Path(self.config.checkpoint_dir)
        final = root / f"{CHECKPOINT_PREFIX}{self.step:07d}"
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self._write_checkpoint(root, final)
        self.accelerator.wait_for_everyone()
        return final

    def _write_checkpoint(self, root: Path, final: Path) -> None:
        with atomic_folder(final) as tmp:
            save_model(self.raw_model, str(tmp / "model.safetensors"))
            if self._ema is not None:
                save_model(self._ema, str(tmp / "ema.safetensors"))
            if self._named:
                torch.save({n: o.state_dict() for n, o in self.optimizers.items()}, tmp / "optimizers.pt")
            else:
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            cfg = asdict(self.config)
            (tmp / "state.json").write_text(json.dumps(
                {"step": self.step, "history": self.history, "config": cfg, "world_size": self.world},
                indent=1, default=str))
        for old in list_checkpoints(root)[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        state_file = path / "state.json"
        if not state_file.exists():
            raise FileNotFoundError(f"{path} is not a complete dfs checkpoint (no state.json); "
                                    f"delete it and resume from an earlier one")
        _load_weights(self.raw_model, path / "model.safetensors")
        if self._ema is not None:
            ema_file = path / "ema.safetensors"
            if ema_file.exists():
                _load_weights(self._ema, ema_file)
            else:
                self._ema.load_state_dict(self._ema_source().state_dict())
        opt_file = path / ("optimizers.pt" if self._named else "optimizer.pt")
        if not opt_file.exists():
            raise ValueError(f"{path} has no {opt_file.name}: it was written by a trainer with "
                             f"{'one optimiser' if self._named else 'several named optimisers'}, this one has "
                             f"{sorted(self.optimizers) if self._named else 'one'}")
        opt_state = torch.load(opt_file, map_location="cpu", weights_only=True)   # load_state_dict moves it
        if self._named:
            if set(opt_state) != set(self.optimizers):
                raise ValueError(f"{path} holds optimisers {sorted(opt_state)}, this trainer has "
                                 f"{sorted(self.optimizers)}")
            for name, opt in self.optimizers.items():
                opt.load_state_dict(opt_state[name])
        else:
            self.optimizer.load_state_dict(opt_state)
        state = json.loads(state_file.read_text())
        self.step, self.history = int(state["step"]), list(state["history"])


def weight_files(folder: str | Path, stem: str) -> list[Path]:
    """``<folder>/<stem>.safetensors``, or its shards ``<stem>-0000k-of-0000n.safetensors`` in order (shipped
    weights are split so that no file in the repository exceeds a few MiB); [] when neither exists."""
    folder = Path(folder)
    single = folder / f"{stem}.safetensors"
    return [single] if single.exists() else sorted(folder.glob(f"{stem}-*-of-*.safetensors"))


def _load_weights(model: torch.nn.Module, files: Path | list[Path]) -> None:
    from safetensors.torch import load_file

    files = [files] if isinstance(files, (str, Path)) else list(files)
    try:
        if len(files) == 1:   # safetensors' own loader (it restores tensors that save_model stored once)
            missing, unexpected = load_model(model, str(files[0]), strict=False)
        else:                 # shards of an export (plain tensors, none shared)
            state = {}
            for f in files:
                state.update(load_file(str(f)))
            missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise ValueError(f"{files[0]} does not match this model ({str(e).splitlines()[-1].strip()}). "
                         f"Was it written for another configuration?") from None
    if missing or unexpected:
        raise ValueError(f"{files[0]} does not match this model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}. Was it written for another configuration?")


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / "state.json").exists()]
    return sorted(done, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def latest_step(root: str | Path) -> int | None:
    last = latest_checkpoint(root)
    return int(last.name[len(CHECKPOINT_PREFIX):]) if last else None


def load_weights(model: torch.nn.Module, checkpoint: str | Path, ema: bool = True) -> torch.nn.Module:
    """Load a checkpoint folder's (EMA) weights, or a ``.safetensors`` file, into ``model``; returns it.

    A folder whose state.json records pruned shapes (``config.extra.pruning.shapes``, written by
    :mod:`dfs.compression`) first gets ``model`` narrowed to them (:func:`resize_to_shapes`): a pruned model is
    rebuilt from its configuration and those widths, without the pruning library."""
    p = Path(checkpoint)
    files = [p] if not p.is_dir() else (weight_files(p, "ema") if ema else []) or weight_files(p, "model")
    if not files or not files[0].exists():
        raise FileNotFoundError(f"no weights at {p}")
    shapes = pruned_shapes(p) if p.is_dir() else None
    if shapes:
        resize_to_shapes(model, shapes)
    _load_weights(model, files)
    return model


def pruned_shapes(folder: str | Path) -> dict[str, list[int]] | None:
    """The shapes {tensor name: shape} a pruned checkpoint folder records in its state.json (None: not pruned)."""
    state_file = Path(folder) / "state.json"
    if not state_file.is_file():
        return None
    pruning = json.loads(state_file.read_text()).get("config", {}).get("extra", {}).get("pruning")
    return None if pruning is None else pruning.get("shapes")


def resize_to_shapes(model: torch.nn.Module, shapes: dict[str, list[int]]) -> torch.nn.Module:
    """Narrow the layers of ``model`` in place so that its tensors have ``shapes`` ({name: shape}, the tensors a
    channel pruning changed): each named parameter or buffer is replaced by an uninitialised one of its new shape,
    and the layer's width attributes follow (convolutions' in/out_channels, linear in/out_features, norms'
    num_channels / num_features / normalized_shape, and a diffusers up/down-sampler's ``channels``, which it
    asserts).  Load the weights afterwards.  Group counts (GroupNorm's ``num_groups``, attention heads) are
    kept, so the widths must stay divisible by them (dfs.compression prunes in multiples of the group count)."""
    owners = {}
    for name, shape in shapes.items():
        module_name, _, tensor_name = name.rpartition(".")
        try:
            module = model.get_submodule(module_name)
        except AttributeError:
            raise ValueError(f"the pruned shapes name {name!r}, which this model does not have: the checkpoint was "
                             f"pruned from another model") from None
        store = module._parameters if tensor_name in module._parameters else module._buffers
        if tensor_name not in store or store[tensor_name] is None:
            raise ValueError(f"the pruned shapes name {name!r}, which this model does not have")
        old = store[tensor_name]
        new = torch.empty(tuple(shape), dtype=old.dtype, device=old.device)
        store[tensor_name] = torch.nn.Parameter(new, old.requires_grad) if isinstance(old, torch.nn.Parameter) else new
        owners[module_name] = module
    for module in owners.values():
        w = getattr(module, "weight", None)
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            if module.transposed:      # ConvTranspose weight: (in, out / groups, k, k)
                module.in_channels, module.out_channels = w.shape[0], w.shape[1] * module.groups
            else:                      # Conv weight: (out, in / groups, k, k)
                module.out_channels, module.in_channels = w.shape[0], w.shape[1] * module.groups
        elif isinstance(module, torch.nn.Linear):
            module.out_features, module.in_features = w.shape
        elif isinstance(module, torch.nn.GroupNorm):
            module.num_channels = w.shape[0]
        elif isinstance(module, torch.nn.LayerNorm):
            module.normalized_shape = (w.shape[0],)
        elif isinstance(module, torch.nn.modules.batchnorm._NormBase):
            module.num_features = (w if w is not None else module.running_mean).shape[0]
    sync_channel_attributes(model)
    return model


def sync_channel_attributes(model: torch.nn.Module) -> None:
    """diffusers' Downsample2D / Upsample2D keep ``channels`` / ``out_channels`` beside their convolution and
    assert the input's width against it: set them from the convolution after its width changed."""
    for module in model.modules():
        conv = getattr(module, "conv", None)
        if hasattr(module, "channels") and isinstance(conv, torch.nn.Conv2d):
            module.channels, module.out_channels = conv.in_channels, conv.out_channels


@contextlib.contextmanager
def atomic_folder(final: Path):
    """A temporary folder beside ``final`` (named ``.incomplete-...``, which no loader reads) that replaces
    ``final`` in one rename when the block succeeds; on an error or a kill it is removed or left aside, never
    half-written in ``final``'s place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".incomplete-"))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def export_weights(checkpoint: str | Path, out: str | Path, provenance: dict | None = None,
                   dtype: torch.dtype = torch.float16, max_file_mib: float = 6.0) -> Path:
    """Ship a checkpoint folder as a small read-only one that every loader of this module accepts: its EMA weights
    (its model weights when it has no EMA) under the same file name, floating-point *parameters* cast to
    ``dtype`` (buffers such as normalisation statistics stay float32), its ``state.json`` without optimiser state,
    and ``provenance.json`` (what made it: command, commit, data, wall time, losses, evaluation).  Weights larger
    than ``max_file_mib`` are split into shards (:func:`weight_files`).  Written atomically; returns ``out``."""
    from safetensors.torch import load_file, save_file

    src = Path(checkpoint)
    state_file = src / "state.json"
    if not state_file.is_file():
        raise FileNotFoundError(f"{src} is not a dfs checkpoint folder (no state.json)")
    weights = src / ("ema.safetensors" if (src / "ema.safetensors").exists() else "model.safetensors")
    tensors = load_file(str(weights))
    state = json.loads(state_file.read_text())
    out = Path(out)
    with atomic_folder(out) as tmp:
        cast = {k: (tensors[k].to(dtype) if tensors[k].is_floating_point() and not _is_statistic(k) else tensors[k])
                .contiguous() for k in sorted(tensors)}
        shards, size = [{}], 0
        for k, v in cast.items():                      # greedy, in key order: each shard under max_file_mib
            n = v.numel() * v.element_size()
            if shards[-1] and size + n > max_file_mib * 2 ** 20:
                shards.append({})
                size = 0
            shards[-1][k], size = v, size + n
        stem = weights.name.removesuffix(".safetensors")
        for k, part in enumerate(shards, 1):
            name = weights.name if len(shards) == 1 else f"{stem}-{k:05d}-of-{len(shards):05d}.safetensors"
            save_file(part, str(tmp / name), metadata={"source": str(weights.name), "dtype": str(dtype)})
        (tmp / "state.json").write_text(json.dumps({"step": state["step"], "history": state["history"],
                                                    "config": state["config"]}, indent=1))
        (tmp / "provenance.json").write_text(json.dumps(provenance or {}, indent=1, default=str) + "\n")
        os.chmod(tmp, 0o755)                                   # mkdtemp makes it private; shipped files are not
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
    return out


def _is_statistic(key: str) -> bool:
    """Buffers kept in float32 when shipping: normalisation running statistics and dfs' identity standardisation."""
    return key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "id_mean", "id_std")
