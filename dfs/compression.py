"""Compression of the swap models by structured channel pruning (Torch-Pruning; the thesis's §2.1 tools).

    path = prune_checkpoint("dfs/weights/swap-quick", ratio=0.5, out="pruned/swap-50", fine_tune_steps=200)
    # dfs swap --checkpoint pruned/swap-50 ...   and   dfs eval --method diffusion --checkpoint pruned/swap-50
    rows = pruning_study("diffusion", ratios=(0, .25, .5, .75), quick=True)     # params, MACs, s/swap, ID, pose

What is pruned, and how:

* **the diffusion swap's U-Net** (``SwapDiffusion.unet``, a diffusers ``UNet2DConditionModel``; the identity
  tokens and the null tokens stay).  Torch-Pruning (Fang et al. 2023, "DepGraph") traces one forward pass and
  groups every channel with all the tensors that must lose it together: a ResNet block's residual stream with its
  skip connection, the encoder features with the decoder's concatenation that reads them, the GroupNorm that
  normalises them, the time-embedding projection that is added to them.  Each group's channels are ranked by the
  L2 norm of their weights over the whole group (``GroupMagnitudeImportance``), and the fraction ``ratio`` of the
  lowest is removed from every prunable group (so a ratio r leaves ≈ (1 − r)² of a convolution's weights).
  Kept as they are: the output convolution (3 channels), the attention's query/key/value projections (their
  output width is heads × head width: keeping it keeps the 8 heads and their width; the block's input width,
  which they read, is pruned), and the GEGLU feed-forward's first projection (its output is split in two halves,
  value and gate, with ``chunk``).  GroupNorm keeps its group count: Torch-Pruning treats its G groups of
  consecutive channels like attention heads and removes the same number of channels from each, so the group
  structure survives and every width stays a multiple of G (a ``round_to=G`` instead, tried first, left whole
  stages unpruned, up to more parameters at ratio 0.75 than at 0.5); the tests check that every GroupNorm still
  divides its channels;
* **FaceShifter's AEI-Net** (the attribute encoder and the AAD generator; HEAR-Net stays).  Its AAD layers split a
  convolution's output in two with ``chunk`` (γ_att, β_att) and a linear map's (γ_id, β_id), and channel i of h
  goes with channels i and C + i of both.  Torch-Pruning's tracer finds that coupling but counts each channel of h
  twice (a ratio of 0.25 removed half of the generator's channels, 0.5 none), so while it runs each producer is
  held as two layers (:class:`_Halves`), merged back afterwards.  The attention mask M = σ(conv(h̄)) has one
  channel broadcast over h's channels; the tracer sees an element-wise product and would prune M's single output
  channel with h's: :class:`_BroadcastOutput` tells it that M's width does not follow h's.  The RGB output
  convolutions are kept.

After pruning, a short **fine-tune** through the one trainer (:class:`dfs.train.Trainer`) with the model's own
training loss: the diffusion swap's denoising + identity loss (:func:`dfs.swap.diffusion.swap_loss`) and AEI-Net's
GAN step (:func:`dfs.swap.faceshifter_train.aei_step`; the shipped weights hold no discriminator, so it starts
untrained).  A pruned checkpoint is a plain dfs checkpoint folder whose state.json records the pruned tensors'
shapes (``config.extra.pruning.shapes``): :func:`dfs.train.load_weights` narrows a freshly built model to them
(:func:`dfs.train.resize_to_shapes`) before loading, so ``dfs swap`` / ``dfs eval --checkpoint`` load it without
Torch-Pruning installed.

Measured per ratio by :func:`pruning_study`: parameters; multiply-accumulates of one network evaluation (one
U-Net call, one AEI-Net forward) by Torch-Pruning's ``count_ops_and_params``; seconds per swap on one CPU thread
and ID top-1 / cosine / pose error with 95 % bootstrap intervals from :func:`dfs.evaluate.evaluate` (the one
evaluation path) on held-out pairs.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from dfs.evaluate import evaluate
from dfs.faces.detect import FaceAnalyzer
from dfs.faces.identity_chips import FaceEmbedder
from dfs.swap.diffusion import DiffusionSwap, SwapDiffusion, load_swap_model, swap_loss
from dfs.swap.faceshifter import AADLayer, AEINet, FaceShifterGAN, FaceShifterSwap, find_run, load_faceshifter
from dfs.swap.shipped import shipped_checkpoint
from dfs.train import TrainConfig, Trainer, atomic_folder
from dfs.labels import lbl

MODELS = ("diffusion", "faceshifter")
RATIOS = (0.0, 0.25, 0.5, 0.75)
# quick mode (notebook 10): both models, four ratios, fine-tune + evaluation.  Measured for both models in one
# process (pruning_study("diffusion") then ("faceshifter"), one thread): 95 s user + 2 s system CPU time; 8 min 13 s
# of wall time while ~12 other processes shared the 2 cores (/usr/bin/time -v, 2026-11-30)
QUICK = {"diffusion": {"fine_tune_steps": 10, "pairs": 4, "sample_steps": 10},
         "faceshifter": {"fine_tune_steps": 10, "pairs": 8, "sample_steps": None}}
FULL = {"diffusion": {"fine_tune_steps": 300, "pairs": 50, "sample_steps": None},
        "faceshifter": {"fine_tune_steps": 300, "pairs": 50, "sample_steps": None}}


def torch_pruning():
    """The ``torch_pruning`` module, or a clear error saying how to install it."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise ImportError("pruning needs Torch-Pruning: pip install 'dfs[compress]' (or pip install "
                          "torch-pruning)") from None
    return tp


# ---------------------------------------------------------------------------------------------------------------
# which checkpoint, which model


def checkpoint_kind(checkpoint) -> str:
    """"diffusion" or "faceshifter" for a checkpoint folder (run, step or shipped folder); clear errors for a
    missing folder or one that holds no known model."""
    p = Path(checkpoint).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}: pass a run or step folder of `dfs train-swap` or a shipped "
                                f"folder such as {shipped_checkpoint('diffusion')}")
    if (p / "aei").is_dir():
        return "faceshifter"
    from dfs.train import latest_checkpoint
    state = p / "state.json" if (p / "state.json").is_file() else None
    if state is None and latest_checkpoint(p) is not None:
        state = latest_checkpoint(p) / "state.json"
    if state is None:
        raise ValueError(f"{p} is not a dfs checkpoint (no state.json, no step_NNNNNNN/ and no aei/ folder)")
    extra = json.loads(state.read_text()).get("config", {}).get("extra", {})
    if "swap_config" in extra:
        return "diffusion"
    if "faceshifter_config" in extra:
        return "faceshifter"
    raise ValueError(f"{p} is a dfs checkpoint but not of a face-swap model (neither the diffusion swap nor "
                     "FaceShifter): only those two can be pruned")


def load_prunable(kind: str, checkpoint=None):
    """(network to prune, everything else the swap needs) in float32 and training mode: (SwapDiffusion, None) or
    (AEI-Net, (HEAR-Net or None, FaceShifter configuration, AEI-Net folder))."""
    checkpoint = checkpoint if checkpoint is not None else shipped_checkpoint(kind)
    if kind == "diffusion":
        model, _, _ = load_swap_model(checkpoint)
        return model.float().train().requires_grad_(True), None
    if kind == "faceshifter":
        aei, hear, cfg, path = load_faceshifter(checkpoint)
        return aei.float().train().requires_grad_(True), (hear, cfg, path)
    raise ValueError(f"model must be one of {MODELS}, got {kind!r}")


def example_inputs(kind: str, model, batch: int = 2):
    """What one network evaluation takes (traced by the pruner and by the MAC count): the U-Net's (noisy crop ⊕
    condition, t, identity tokens), AEI-Net's (target crop, identity vector)."""
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    S = cfg.image_size
    if kind == "diffusion":
        unet = model.unet
        return {"sample": torch.randn(batch, unet.config.in_channels, S, S, generator=g),
                "timestep": torch.tensor([10, 500] * (batch // 2) + [250] * (batch % 2)),
                "encoder_hidden_states": torch.randn(batch, cfg.id_tokens, cfg.token_dim, generator=g)}
    z = torch.nn.functional.normalize(torch.randn(batch, cfg.id_dim, generator=g), dim=1)
    return (torch.rand(batch, 3, S, S, generator=g) * 2 - 1, z)


def pruned_network(kind: str, model) -> torch.nn.Module:
    """The part of the model that is pruned and counted: the U-Net, or AEI-Net itself."""
    return model.unet if kind == "diffusion" else model


def count(kind: str, model) -> dict:
    """{"params": parameters of the whole network (the swap's: U-Net + identity tokens; AEI-Net), "macs":
    multiply-accumulates of one evaluation of the pruned network (Torch-Pruning's count)}."""
    tp = torch_pruning()
    net = pruned_network(kind, model)
    with torch.no_grad():
        macs, _ = tp.utils.count_ops_and_params(net, example_inputs(kind, model))
    return {"params": sum(p.numel() for p in model.parameters()), "macs": int(macs)}


# ---------------------------------------------------------------------------------------------------------------
# pruning


class _Halves(torch.nn.Module):
    """An AAD layer's γ/β producer (a convolution or a linear map with 2C outputs, read as ``chunk(2)``) held as two
    layers of C outputs while Torch-Pruning runs: its tracer maps a ``chunk``'s channels back to the producer wrongly
    (each kept channel of h counted twice), so the halves are traced as two layers and merged afterwards."""

    def __init__(self, layer):
        super().__init__()
        self.first, self.second = copy.deepcopy(layer), copy.deepcopy(layer)
        for half, part in ((self.first, 0), (self.second, 1)):
            n = half.weight.shape[0] // 2
            half.weight = torch.nn.Parameter(half.weight.data[part * n:(part + 1) * n].clone())
            half.bias = torch.nn.Parameter(half.bias.data[part * n:(part + 1) * n].clone())
            if isinstance(half, torch.nn.Linear):
                half.out_features = n
            else:
                half.out_channels = n

    def merged(self):
        layer = copy.deepcopy(self.first)
        layer.weight = torch.nn.Parameter(torch.cat([self.first.weight.data, self.second.weight.data]))
        layer.bias = torch.nn.Parameter(torch.cat([self.first.bias.data, self.second.bias.data]))
        if isinstance(layer, torch.nn.Linear):
            layer.out_features = layer.weight.shape[0]
        else:
            layer.out_channels = layer.weight.shape[0]
        return layer


def _aad_forward_in_halves(self, h, z_att, z_id):
    """:meth:`dfs.swap.faceshifter.AADLayer.forward` with γ and β from the two halves of :class:`_Halves`."""
    h = self.norm(h)
    A = self.att.first(z_att) * h + self.att.second(z_att)
    I = self.id.first(z_id)[:, :, None, None] * h + self.id.second(z_id)[:, :, None, None]
    M = torch.sigmoid(self.mask(h))
    return (1 - M) * A + M * I, M


class _BroadcastConv(torch.nn.Conv2d):
    """A convolution whose output is broadcast over the channels it multiplies (AAD's one-channel mask M); used
    only while Torch-Pruning runs, to pick :class:`_BroadcastOutput` for it."""


def _broadcast_pruner():
    tp = torch_pruning()

    class _BroadcastOutput(tp.pruner.function.ConvPruner):
        """Prunes the convolution's inputs as usual and never its (broadcast) output."""

        def prune_out_channels(self, layer, idxs):
            return layer

        def get_out_channels(self, layer):   # not a width the group's pruning may exhaust
            return None

    return _BroadcastOutput()


def check_ratio(ratio) -> float:
    ratio = float(ratio)
    if not 0 <= ratio < 1:
        raise ValueError(f"the pruning ratio is the fraction of channels removed from every prunable layer, in "
                         f"[0, 1); got {ratio}")
    return ratio


def prune(kind: str, model, ratio: float):
    """Remove the fraction ``ratio`` of the channels of every prunable layer group (module docstring), in place;
    returns the model.  ``ratio`` 0 leaves it unchanged."""
    ratio = check_ratio(ratio)
    if ratio == 0:
        return model
    tp = torch_pruning()
    net = pruned_network(kind, model)
    was = net.training
    net.train()   # BatchNorm's batch statistics: the traced graph is the training one
    ignored, masks, aads, custom = [], [], [], {}
    if kind == "diffusion":
        ignored = [net.conv_out] + [m for n, m in net.named_modules()
                                    if n.endswith((".to_q", ".to_k", ".to_v", ".ff.net.0.proj"))]
    else:
        aads = [m for m in net.modules() if isinstance(m, AADLayer)]
        masks = [m.mask for m in aads]
        last = net.generator.blocks[-1]
        ignored = [last.conv2] + ([last.conv3] if last.learned_shortcut else [])
        for m in masks:
            m.__class__ = _BroadcastConv
        for m in aads:
            m.att, m.id = _Halves(m.att), _Halves(m.id)
            m.forward = types.MethodType(_aad_forward_in_halves, m)
        custom = {_BroadcastConv: _broadcast_pruner()}
    try:
        pruner = tp.pruner.MetaPruner(net, example_inputs(kind, model),
                                      importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
                                      ignored_layers=ignored, customized_pruners=custom)
        pruner.step()
    finally:
        for m in masks:
            m.__class__ = torch.nn.Conv2d
        for m in aads:
            m.att, m.id = m.att.merged(), m.id.merged()
            del m.forward
    from dfs.train import sync_channel_attributes
    sync_channel_attributes(net)
    net.train(was)
    return model


def fresh_model(kind: str, config) -> torch.nn.Module:
    """The unpruned network of ``config`` (the reference the pruned shapes are recorded against)."""
    return SwapDiffusion(config) if kind == "diffusion" else AEINet(config)


def changed_shapes(kind: str, model) -> dict[str, list[int]]:
    """{tensor name: shape} of the model's tensors whose shape differs from the unpruned model's."""
    ref = fresh_model(kind, model.config).state_dict()
    return {k: list(v.shape) for k, v in model.state_dict().items() if tuple(v.shape) != tuple(ref[k].shape)}


# ---------------------------------------------------------------------------------------------------------------
# fine-tuning through the one trainer


def fine_tune(kind: str, model, steps: int, data=None, seed: int = 0, wandb_project: str | None = None,
              progress: bool = False, extra=None):
    """Train the pruned model ``steps`` steps with its own loss (module docstring) through
    :class:`dfs.train.Trainer`, in memory; returns (the EMA network, the trainer)."""
    from dfs.swap.data import prepare_training_data
    from dfs.swap.faceshifter_train import PairSampler, aei_step

    cfg = model.config
    data_cfg = cfg if kind == "diffusion" else cfg.data_config()
    data = data if data is not None else prepare_training_data(data_cfg, progress=False)
    if kind == "diffusion":
        tcfg = TrainConfig(steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, grad_clip=cfg.grad_clip,
                           ema_decay=cfg.ema_decay, seed=seed, log_every=max(1, min(25, steps)), progress=progress,
                           wandb_project=wandb_project, extra={"swap_config": cfg.to_dict(), **(extra or {})})
        trainer = Trainer(model, swap_loss, data, tcfg)
    else:
        torch.manual_seed(seed)
        gan = FaceShifterGAN(cfg)
        gan.aei = model
        betas = (cfg.beta1, cfg.beta2)
        opts = {"g": torch.optim.Adam(gan.aei.parameters(), lr=cfg.lr_g, betas=betas),
                "d": torch.optim.Adam(gan.disc.parameters(), lr=cfg.lr_d, betas=betas)}
        tcfg = TrainConfig(steps=steps, batch_size=cfg.batch_size, lr=cfg.lr_g, adam_betas=betas,
                           grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay, seed=seed,
                           log_every=max(1, min(25, steps)), progress=progress, wandb_project=wandb_project,
                           extra={"faceshifter_config": cfg.to_dict(), "stage": "aei", **(extra or {})})
        trainer = Trainer(gan, None, PairSampler(data, cfg.batch_size, cfg.p_same, id_jitter=cfg.id_jitter), tcfg,
                          optimizers=opts, step_fn=aei_step, ema_module="aei")    # the model's own training pairs
    if steps > 0:
        trainer.fit()
    return trainer.ema_model.eval(), trainer


# ---------------------------------------------------------------------------------------------------------------
# pruned checkpoints


def save_pruned(kind: str, model, source, out, ratio: float, history=(), fine_tune_steps: int = 0,
                counts: dict | None = None) -> Path:
    """Write ``model`` (pruned) as a checkpoint folder that ``dfs swap`` / ``dfs eval --checkpoint`` load:
    ``ema.safetensors`` + ``state.json`` (the source's configuration, plus ``extra.pruning``: ratio, source,
    parameters, MACs and the changed tensors' shapes); a FaceShifter run gets ``aei/`` and the source's ``hear/``.
    Written atomically."""
    source = Path(source)
    src_state = _state_file(kind, source)
    state = json.loads(src_state.read_text())
    counts = counts or count(kind, model)
    state["config"]["extra"]["pruning"] = {
        "ratio": ratio, "source": str(source), "fine_tune_steps": fine_tune_steps, **counts,
        "method": "Torch-Pruning MetaPruner, GroupMagnitudeImportance(p=2)",
        "shapes": changed_shapes(kind, model)}
    state["config"]["extra"].pop("aei_step", None)
    state["step"], state["history"] = int(fine_tune_steps), list(history)
    weights = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    out = Path(out)
    with atomic_folder(out) as tmp:
        folder = tmp / "aei" if kind == "faceshifter" else tmp
        folder.mkdir(exist_ok=True)
        save_file(weights, str(folder / "ema.safetensors"), metadata={"pruning_ratio": str(ratio)})
        (folder / "state.json").write_text(json.dumps(state, indent=1, default=str))
        if kind == "faceshifter":
            _, hear = find_run(source)
            if hear is not None:
                shutil.copytree(hear, tmp / "hear")
    return out


def _state_file(kind: str, source: Path) -> Path:
    if kind == "faceshifter":
        return find_run(source)[0] / "state.json"
    from dfs.swap.diffusion import find_checkpoint
    return find_checkpoint(source) / "state.json"


def prune_checkpoint(checkpoint, ratio: float, out, fine_tune_steps: int = 0, seed: int = 0,
                     wandb_project: str | None = None, progress: bool = True, data=None) -> Path:
    """``dfs prune``: load ``checkpoint`` (diffusion swap or FaceShifter, found from the folder), prune ``ratio``
    of its channels, fine-tune ``fine_tune_steps`` steps, write the pruned checkpoint to ``out``.  Everything is
    checked before anything is written."""
    ratio = check_ratio(ratio)
    if fine_tune_steps < 0:
        raise ValueError(f"fine_tune_steps must be >= 0, got {fine_tune_steps}")
    kind = checkpoint_kind(checkpoint)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "state.json").is_file() and not (out / "aei").is_dir():
        raise FileExistsError(f"{out} exists and is not a checkpoint folder: pass a new --out folder")
    model, _ = load_prunable(kind, checkpoint)
    prune(kind, model, ratio)
    counts = count(kind, model)
    history = []
    if fine_tune_steps:
        model, trainer = fine_tune(kind, model, fine_tune_steps, data, seed, wandb_project, progress,
                                   extra={"pruning_ratio": ratio})
        history = trainer.history
        if trainer._wandb is not None:
            trainer.log_wandb({f"pruning/{k}": v for k, v in counts.items()} | {"pruning/ratio": ratio})
            trainer.finish_wandb()
    return save_pruned(kind, model, checkpoint, out, ratio, history, fine_tune_steps, counts)


# ---------------------------------------------------------------------------------------------------------------
# the study


class _PhotoCachedAnalyzer(FaceAnalyzer):
    """A FaceAnalyzer that remembers the faces of photo files (by path): a sweep's evaluations detect the held-out
    photos once, not once per setting; images without a file name (the swap results) are detected every time."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._memo = {}

    def detect(self, image, name=None):
        key = name if isinstance(name, str) and Path(name).is_file() else None
        if key is None:
            return super().detect(image, name)
        if key not in self._memo:
            self._memo[key] = super().detect(image, name)
        return self._memo[key]


class _CachedEmbedder(FaceEmbedder):
    """A FaceEmbedder that remembers the identity vectors of (photo, face) pairs it has seen (by content): the
    gallery, the sources and the targets are embedded once per sweep."""

    def __init__(self, encoder=None):
        super().__init__(encoder)
        self._memo = {}

    def __call__(self, items, batch: int = 32):
        keys = [hashlib.sha1(np.ascontiguousarray(im).tobytes() + np.asarray(f.box).tobytes()).hexdigest()
                for im, f in items]
        todo = [(k, it) for k, it in zip(keys, items) if k not in self._memo]
        if todo:
            for (k, _), e in zip(todo, super().__call__([it for _, it in todo], batch)):
                self._memo[k] = e
        return np.stack([self._memo[k] for k in keys]) if keys else super().__call__([], batch)


_JUDGING: list = []


def _judging():
    """The (analyzer, identity embedder) every study evaluation of this process shares, with their caches: the
    held-out photos are detected and embedded once for both models and all ratios."""
    if not _JUDGING:
        _JUDGING.extend([_PhotoCachedAnalyzer(), _CachedEmbedder()])
    return tuple(_JUDGING)


def swap_method(kind: str, model, extra, sample_steps=None):
    """The pipeline method (:mod:`dfs.swap`) around an in-memory (pruned) network."""
    if kind == "diffusion":
        return DiffusionSwap(model=model.eval(), device="cpu", **({"steps": sample_steps} if sample_steps else {}))
    hear = extra[0]
    return FaceShifterSwap(aei=model.eval(), hear_net=hear, device="cpu")


def pruning_study(model: str = "diffusion", ratios=RATIOS, fine_tune_steps: int | None = None,
                  pairs: int | None = None, quick: bool = True, checkpoint=None, data=None, seed: int = 0,
                  sample_steps: int | None = None, wandb_project: str | None = None, progress: bool = False) -> list:
    """Prune ``model``'s checkpoint (default: the shipped quick weights) at each of ``ratios``, fine-tune each for
    ``fine_tune_steps`` steps, and evaluate it on ``pairs`` held-out pairs (:func:`dfs.evaluate.evaluate`, seed
    ``seed``; the same pairs at every ratio).  ``quick``: the defaults of :data:`QUICK` (else :data:`FULL`).
    ``sample_steps``: the diffusion swap's DDIM steps (default the checkpoint's).  Returns one row per ratio:

        {"model", "ratio", "params", "macs", "fine_tune_steps", "fine_tune_seconds", "final_loss",
         "seconds_per_swap" (one CPU thread), "n_pairs", "id_top1", "id_cos_source", "pose_error",
         "<metric>_ci": [low, high] (95 % bootstrap over the pairs) for the last three, "face_found"}

    Nothing is recorded; the caller records the rows.  ``wandb_project``: each fine-tune is a wandb run, which
    also gets its evaluation row."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    ratios = [check_ratio(r) for r in ratios]
    defaults = (QUICK if quick else FULL)[model]
    steps = defaults["fine_tune_steps"] if fine_tune_steps is None else int(fine_tune_steps)
    pairs = defaults["pairs"] if pairs is None else int(pairs)
    sample_steps = sample_steps if sample_steps is not None else defaults["sample_steps"]
    analyzer, embedder = _judging()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                 # s / swap on one CPU thread, as every dfs eval reports it
    rows = []
    try:
        base, extra = load_prunable(model, checkpoint)
        train_data = data
        if steps and train_data is None:
            from dfs.swap.data import prepare_training_data
            cfg = base.config
            train_data = prepare_training_data(cfg if model == "diffusion" else cfg.data_config(), progress=False)
        for ratio in ratios:
            net = prune(model, copy.deepcopy(base), ratio)
            counts = count(model, net)
            t0 = time.perf_counter()
            net, trainer = fine_tune(model, net, steps, train_data, seed, wandb_project, progress,
                                     extra={"pruning_ratio": ratio})
            tuned = time.perf_counter() - t0
            report = evaluate(swap_method(model, net, extra, sample_steps), pairs=pairs, seed=seed,
                              compare=None, references=False, self_pairs=0, progress=progress,
                              keep_examples=False, analyzer=analyzer, encoder=embedder)
            name = report.summary["settings"]["method"]
            r, ci = report.summary["rows"][name], report.summary["intervals"][name]
            row = {"model": model, "ratio": ratio, **counts, "fine_tune_steps": steps,
                   "fine_tune_seconds": tuned,
                   "final_loss": (trainer.history[-1].get("loss", trainer.history[-1].get("loss_g"))
                                  if trainer.history else None),
                   "seconds_per_swap": r["seconds_per_swap"], "n_pairs": report.summary["n_pairs"],
                   "face_found": r["face_found"]}
            for k in ("id_top1", "id_cos_source", "pose_error"):
                row[k] = r.get(k)
                iv = ci.get(k)
                row[k + "_ci"] = None if iv is None else [float(iv[0]), float(iv[1])]
            if trainer._wandb is not None:
                trainer.log_wandb({f"eval/{k}": v for k, v in row.items() if isinstance(v, (int, float))})
                trainer.finish_wandb()
            rows.append(row)
    finally:
        torch.set_num_threads(threads)
    return rows


def plot_pruning(rows: list, name: str | None = "fig_pruning_curves", directory=None):
    """The pruning curves of :func:`pruning_study` rows (one line per model): parameters and MACs relative to the
    unpruned model, ID top-1 and cosine to the source, pose error (95 % intervals as bars) and seconds per swap,
    against the pruning ratio.  Saved with :func:`dfs.figures.save` when ``name`` is given; returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for colour, model in zip(("C0", "C1"), [m for m in MODELS if any(r["model"] == m for r in rows)]):
        rs = sorted((r for r in rows if r["model"] == model), key=lambda r: r["ratio"])
        x = [r["ratio"] for r in rs]
        base = next((r for r in rs if r["ratio"] == 0), rs[0])
        axes[0].plot(x, [r["params"] / base["params"] for r in rs], "o-", color=colour, label=lbl("{model}: parameters", model=model))
        axes[0].plot(x, [r["macs"] / base["macs"] for r in rs], "s--", color=colour, alpha=0.6,
                     label=lbl("{model}: MACs", model=model))
        for ax, key in ((axes[1], "id_cos_source"), (axes[2], "pose_error")):
            y = [r[key] for r in rs]
            if any(v is None for v in y):
                continue
            lo = [r[key] - r[key + "_ci"][0] if r[key + "_ci"] else 0 for r in rs]
            hi = [r[key + "_ci"][1] - r[key] if r[key + "_ci"] else 0 for r in rs]
            ax.errorbar(x, y, yerr=[lo, hi], fmt="o-", color=colour, capsize=3, label=model)
        axes[3].plot(x, [r["seconds_per_swap"] for r in rs], "o-", color=colour, label=model)
    axes[0].set(title=lbl("size (relative to ratio 0)"), ylabel=lbl("fraction kept"))
    axes[1].set(title=lbl("ID cosine to the source ↑ (95 % CI)"))
    axes[2].set(title=lbl("pose error (°) ↓ (95 % CI)"))
    axes[3].set(title=lbl("seconds per swap, 1 CPU thread"))
    for ax in axes:
        ax.set_xlabel(lbl("pruning ratio (channels removed per layer)"))
        ax.legend(fontsize=7)
    fig.tight_layout()
    if name:
        from dfs.figures import save
        save(fig, name, directory, caption="Structured channel pruning (Torch-Pruning) of the quick diffusion swap "
             "and FaceShifter, each fine-tuned briefly after pruning: size, identity, pose and speed against the "
             "fraction of channels removed.")
    return fig
