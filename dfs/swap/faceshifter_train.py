"""Training FaceShifter (:mod:`dfs.swap.faceshifter`) through the one trainer, :class:`dfs.train.Trainer`.

* **data**: the diffusion swap's training faces (:func:`dfs.swap.data.prepare_training_data`: the same identity
  split, the same aligned-crop cache), drawn as FaceShifter does: target X_t and source X_s independently and
  uniformly over all faces (mostly two different people), and X_s = X_t with probability ``p_same``
  (:class:`PairSampler`);
* **stage 1** (``<checkpoint_dir>/aei``): AEI-Net and the discriminator, two Adam optimisers, one step function
  (:func:`aei_step`: the generator's step, then the discriminator's on the detached Ŷ); EMA of AEI-Net only;
* **stage 2** (``<checkpoint_dir>/hear``): HEAR-Net on the frozen (EMA) AEI-Net, one optimiser, targets with synthetic
  occlusions (:func:`occlude`).  Its checkpoints record the AEI-Net step they were trained on; training AEI-Net
  further makes them stale, which :func:`train_faceshifter` refuses to mix.

Both stages resume exactly (the Trainer's per-step seeding).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from dfs.data.faces import resolved_data
from dfs.swap.config import check_compatible
from dfs.swap.data import cross_pairs, identity_cosines, prepare_training_data
from dfs.swap.errors import SwapOutOfMemory, oom_message
from dfs.swap.faceshifter import (
    AEINet,
    FaceShifterConfig,
    FaceShifterGAN,
    HEARNet,
    hear_losses,
    same_pair_weights,
    heuristic_error,
    load_config,
    saved_config,
)


def occlude(x: torch.Tensor, others: torch.Tensor, generator: torch.Generator, p: float) -> torch.Tensor:
    """With probability ``p`` per image, paste a rectangle (sides S/4 … S/2) of the matching image of ``others``
    at a random place: the synthetic occlusions HEAR-Net learns to keep (§3.2)."""
    B, _, S, _ = x.shape
    hit = torch.rand(B, generator=generator) < p
    hw = torch.randint(S // 4, S // 2 + 1, (B, 2), generator=generator)
    corners = torch.rand(B, 4, generator=generator)           # target (y, x) and source (y, x), as fractions
    out = x.clone()
    for b in torch.nonzero(hit).flatten().tolist():
        h, w = hw[b].tolist()
        ty, tx, sy, sx = (int(f * (S - n + 1)) for f, n in zip(corners[b].tolist(), (h, w, h, w)))
        out[b, :, ty:ty + h, tx:tx + w] = others[b, :, sy:sy + h, sx:sx + w]
    return out


def jitter_identity(z: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """(z + scale · n / √d) / ‖·‖ with n ~ N(0, I_d): unit identity vectors moved by a random offset of norm ≈
    ``scale`` in every direction of the d-dimensional space.  Forty training people span at most forty of dlib's
    128 directions; a generator that only ever sees them never learns what the other directions do to a face,
    which is where a new person's vector differs."""
    if scale == 0:
        return z
    n = torch.randn(z.shape, generator=generator, dtype=z.dtype)
    return F.normalize(z + scale * n / z.shape[-1] ** 0.5, dim=-1)


class PairSampler:
    """``data(step, generator)`` for the Trainer: (X_t, z_id(X_s), chip matrix of X_t, w, z_id(X_t)), with X_t
    and X_s uniform over ``faces`` (a :class:`dfs.swap.data.SwapData`) and X_s = X_t with probability
    ``p_same``; w: the reconstruction weights of the same-person pairs (:func:`~dfs.swap.faceshifter.same_pair_weights`,
    over the whole batch); ``occlusion``: the probability of a synthetic occlusion on X_t (HEAR-Net's stage);
    ``id_jitter``: the source vectors of the other pairs are moved by :func:`jitter_identity` (the same-person
    pairs keep z_id(X_t), which their reconstruction loss needs)."""

    def __init__(self, faces, batch_size: int, p_same: float, occlusion: float = 0.0, id_jitter: float = 0.0):
        if len(faces) < 2:
            raise ValueError(f"FaceShifter needs at least 2 training faces, got {len(faces)}")
        self.faces, self.batch_size, self.p_same, self.occlusion = faces, int(batch_size), p_same, occlusion
        self.id_jitter = id_jitter

    def __call__(self, step: int, generator: torch.Generator):
        f, B = self.faces, self.batch_size
        i = torch.randint(0, len(f), (B,), generator=generator)
        j = torch.randint(0, len(f), (B,), generator=generator)
        same = torch.rand(B, generator=generator) < self.p_same
        j = torch.where(same, i, j)
        x_t = f.crops[i]
        if self.occlusion > 0:
            k = torch.randint(0, len(f), (B,), generator=generator)
            x_t = occlude(x_t, f.crops[k], generator, self.occlusion)
        z_s = f.embeddings[j]
        if self.id_jitter > 0:
            z_s = torch.where(same[:, None], z_s, jitter_identity(z_s, self.id_jitter, generator))
        return x_t, z_s, f.chip_M[i], same_pair_weights(same), f.embeddings[i]


def aei_step(trainer, batch, step: int) -> dict:
    """One AEI-Net step: the generator's update on L_AEI, then the discriminator's on the hinge loss with the
    (detached) Ŷ of this batch.  Goes through ``trainer.model`` (accelerate's wrapper)."""
    g = trainer.model(*batch, part="g")
    trainer.backward_step(g["loss"], "g")
    d = trainer.model(batch[0], None, None, None, part="d", fake=g["fake"].detach())
    trainer.backward_step(d["loss"], "d")
    return {"loss_g": g["loss"], "adv": g["adv"], "id": g["id"], "att": g["att"], "rec": g["rec"],
            "loss_d": d["loss"], "d_real": d["real"], "d_fake": d["fake_logit"]}


def _train_config(cfg: FaceShifterConfig, folder: Path, steps: int, lr: float, progress: bool, **extra):
    from dfs.train import TrainConfig
    return TrainConfig(steps=steps, batch_size=cfg.batch_size, lr=lr, adam_betas=(cfg.beta1, cfg.beta2),
                       warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay,
                       seed=cfg.seed, checkpoint_dir=str(folder), checkpoint_every=cfg.checkpoint_every,
                       log_every=cfg.log_every, progress=progress, mixed_precision=cfg.mixed_precision,
                       extra={"faceshifter_config": cfg.to_dict(), "data_dir": str(resolved_data(cfg.data)),
                              **extra})


def _refuse_other_model(folder: Path, cfg: FaceShifterConfig) -> None:
    from dfs.train import latest_checkpoint
    last = latest_checkpoint(folder)
    if last is not None:
        check_compatible(saved_config(last), cfg, f"the checkpoint {last}")


def train_aei(cfg: FaceShifterConfig, data, root: Path, progress: bool = True, step_fn=None,
              wandb_project: str | None = None):
    """Stage 1 (or its resumption) to ``cfg.steps``; returns the Trainer (``ema_model`` is the EMA AEI-Net)."""
    from dfs.train import Trainer

    folder = root / "aei"
    _refuse_other_model(folder, cfg)
    torch.manual_seed(cfg.seed)  # initial weights: a function of the seed
    gan = FaceShifterGAN(cfg)
    if cfg.id_center:                   # μ, σ of the training faces' identity vectors (a resumed run reloads them)
        gan.aei.set_identity_statistics(data.embeddings)
    betas = (cfg.beta1, cfg.beta2)
    opts = {"g": torch.optim.Adam(gan.aei.parameters(), lr=cfg.lr_g, betas=betas),
            "d": torch.optim.Adam(gan.disc.parameters(), lr=cfg.lr_d, betas=betas)}
    tcfg = _train_config(cfg, folder, cfg.steps, cfg.lr_g, progress, stage="aei")
    tcfg.wandb_project = wandb_project
    trainer = Trainer(gan, None, PairSampler(data, cfg.batch_size, cfg.p_same, id_jitter=cfg.id_jitter), tcfg,
                      optimizers=opts, step_fn=step_fn or aei_step, ema_module="aei")
    trainer.fit()
    if trainer._wandb is not None:      # a grid of swaps of training pairs and their identity cosines
        score = identity_score(trainer.ema_model, data, n=min(8, len(data)))
        trainer.log_wandb({"samples/swaps": score["results"],
                           **{f"samples/{k}": v for k, v in score.items() if isinstance(v, float)}})
        trainer.finish_wandb()
    return trainer


def train_hear(cfg: FaceShifterConfig, data, root: Path, aei: AEINet | None = None, progress: bool = True,
               loss_fn=None):
    """Stage 2 (or its resumption) to ``cfg.hear_steps`` on the frozen AEI-Net of ``root/aei`` (or ``aei``)."""
    import json

    from dfs.swap.faceshifter import load_faceshifter
    from dfs.train import Trainer, latest_checkpoint, latest_step

    aei_step_now = latest_step(root / "aei")
    if aei is None:
        aei = load_faceshifter(root, config=cfg, hear=False)[0]
    folder = root / "hear"
    _refuse_other_model(folder, cfg)
    last = latest_checkpoint(folder)
    if last is not None:
        trained_on = json.loads((last / "state.json").read_text())["config"]["extra"].get("aei_step")
        if trained_on != aei_step_now:
            raise ValueError(f"the HEAR-Net checkpoints in {folder} were trained on AEI-Net step {trained_on}, and "
                             f"AEI-Net is now at step {aei_step_now}: delete {folder} to train HEAR-Net again")
    aei = aei.eval().requires_grad_(False)
    torch.manual_seed(cfg.seed + 1)
    net = HEARNet(cfg)
    tcfg = _train_config(cfg, folder, cfg.hear_steps, cfg.lr_hear, progress, stage="hear", aei_step=aei_step_now)

    def hear_loss(model, batch, step):
        x_t, z_s, chip_M, same_weight, z_t = batch
        return hear_losses(model, aei, x_t, z_s, z_t, chip_M, same_weight, cfg)

    trainer = Trainer(net, loss_fn or hear_loss, PairSampler(data, cfg.batch_size, cfg.hear_p_same,
                                                             cfg.hear_occlusion), tcfg)
    aei.to(trainer.device)
    trainer.fit()
    return trainer


def train_faceshifter(config: FaceShifterConfig | str = "quick", data=None, progress: bool = True,
                      checkpoint_dir: str | os.PathLike | None = None, stages: tuple = ("aei", "hear"),
                      wandb_project: str | None = None):
    """Train (or resume) AEI-Net, then HEAR-Net; returns {stage: Trainer}.  ``data``: a
    :class:`~dfs.swap.data.SwapData` (default: the configuration's training faces)."""

    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    unknown = set(stages) - {"aei", "hear"}
    if unknown:
        raise ValueError(f"stages are 'aei' and 'hear', got {sorted(unknown)}")
    root = Path(checkpoint_dir) if checkpoint_dir is not None else cfg.resolved_checkpoint_dir()
    for sub in ("aei", "hear"):
        _refuse_other_model(root / sub, cfg)
    data = data if data is not None else prepare_training_data(cfg.data_config(), progress)
    out = {}
    try:
        if "aei" in stages:
            out["aei"] = train_aei(cfg, data, root, progress, wandb_project=wandb_project)
        if "hear" in stages and cfg.hear_steps > 0:
            aei = out["aei"].ema_model if "aei" in out else None
            out["hear"] = train_hear(cfg, data, root, aei=aei, progress=progress)
    except torch.OutOfMemoryError as e:
        raise SwapOutOfMemory(oom_message("training FaceShifter", e)) from None
    return out


@torch.no_grad()
def identity_score(aei: AEINet, data, n: int = 8, seed: int = 0, hear: HEARNet | None = None,
                   blur: float = 0.0) -> dict:
    """Swap ``n`` cross-identity pairs of ``data`` (:func:`dfs.swap.data.cross_pairs`), blend through the
    target's mask, and return the mean cosines of ID(result) to the source's and the target's embeddings, the
    results (B, 3, S, S) and the pair indices — as :func:`dfs.swap.diffusion.swap_identity_score` does.  ``blur``:
    a Gaussian blur (standard deviation in pixels) of the results before ID — a check that the identity is not a
    high-frequency pattern that only the identity network (the loss's, and the metric's) reads."""

    i, j = cross_pairs(data, n, seed)
    was = aei.training
    aei.eval()
    dev = next(aei.parameters()).device
    tgt, mask = data.crops[i], data.masks[i]
    y = aei(tgt.to(dev), data.embeddings[j].to(dev))[0]
    if hear is not None:
        y = hear(y, heuristic_error(aei, tgt.to(dev), data.embeddings[i].to(dev)))
    aei.train(was)
    out = mask * y.clamp(-1, 1).cpu() + (1 - mask) * tgt
    return {**identity_cosines(out, data, i, j, blur), "results": out, "targets": i, "sources": j}


@torch.no_grad()
def reference_scores(data, n: int = 8, seed: int = 0, blur: float = 0.0) -> dict:
    """The same cosines as :func:`identity_score` on the same pairs for the two references: "target unchanged"
    and "source pasted" (the source's aligned crop through the target's mask)."""

    i, j = cross_pairs(data, n, seed)   # identity_score's pairs
    tgt, mask = data.crops[i], data.masks[i]
    return {"target unchanged": identity_cosines(tgt, data, i, j, blur),
            "source pasted": identity_cosines(mask * data.crops[j] + (1 - mask) * tgt, data, i, j, blur)}
