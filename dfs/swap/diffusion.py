"""The diffusion face swap: an inpainting diffusion model conditioned on the source's pixels and identity.

In the spirit of DiffSwap (Zhao et al. 2023), REFace (Baliah et al. 2024) and DiffFace (Kim et al. 2022), on the
aligned crops of :mod:`dfs.swap.pipeline` (side S, pixel space, values in [-1, 1]):

* **Denoiser** ε_θ(x_t, t, c, τ(e)): a diffusers ``UNet2DConditionModel`` whose input is the noisy crop x_t
  concatenated (channels) with the condition c = [ target ⊙ (1 - m),  m,  H(landmarks),  r ⊙ m ]: the target with
  its face region blanked, the soft face mask m, 5 landmark heatmaps (jaw, brows, nose, eyes, mouth; each the max
  of isotropic Gaussians at the 68 landmarks of that group) that carry the target's pose and expression, and (with
  ``source_pixels``) the **reference** r: the source's crop warped piecewise-affinely onto the target's landmarks
  and colour-matched (:func:`dfs.swap.data.warped_references`, the classical swap's steps 1-3).  With
  ``reference_skip`` an x_0-model predicts a residual on it, x̂_0 = U_θ(...) + r ⊙ m, so the untrained network
  already returns the warp and learns what to change in it (re-light, blend, repair);
* **identity**: the source's identity embedding e (dlib's ResNet, 128-D unit vector) mapped to K tokens
  τ(e) = W (e − μ)/σ (``dfs.latent.EmbeddingTokens`` on the embedding standardised over the training faces:
  :meth:`SwapDiffusion.set_identity_statistics` says why) and read by the U-Net's cross-attention,
  softmax(Q Kᵀ/√d) V with K = W_K τ(e), V = W_V τ(e) (Rombach et al. 2022, eq. 3; the thesis's Fig. 1.5);
  replaced by learned null tokens ∅ with probability p_uncond for classifier-free guidance (Ho & Salimans 2022);
* **training pairs** (self-reconstruction, :class:`dfs.swap.data.SwapData`): x_0 = an aligned photo of a person,
  e and r from *another* photo of the same person (r degraded: landmark jitter, colour, blur), so the masked face
  must be rebuilt from the source's pixels and identity and the target's context.  The ∅ condition of
  classifier-free guidance drops the tokens and r together (:meth:`SwapDiffusion.null_condition`);
* **losses** (``SwapDiffusion.forward``):
  L = ‖y − y_θ(x_t, t, c, τ(e))‖²                                          (denoising term)
    + λ_id · w(t) · (1 − cos(ID(m ⊙ x̂_0 + (1 − m) ⊙ x_0), e))               (identity loss)
    + λ_rec · ‖(1 − m) ⊙ (x̂_0 − x_0)‖²                                      (optional, outside the mask)
  where the U-Net's output y is one of three parameterisations (``prediction``), each turned into the ε samplers
  take and the x̂_0 the losses use through eq. 2, x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε:
    "eps": y = ε (Ho et al. eq. 14),   x̂_0 = (x_t − √(1−ᾱ_t) ε_θ)/√ᾱ_t;
    "v":   y = v = √ᾱ_t ε − √(1−ᾱ_t) x_0 (Salimans & Ho 2022, §4),   x̂_0 = √ᾱ_t x_t − √(1−ᾱ_t) v_θ;
    "x0":  y = x_0,   ε̂ = (x_t − √ᾱ_t x̂_0)/√(1−ᾱ_t).
  Why it matters here: an ε-model's x̂_0 divides its error by √ᾱ_t → 0, and a v-model's x̂_0 keeps √ᾱ_t x_t, noise
  included, unless the network has learned to cancel it; an x_0-model that has learned little predicts a smooth
  face.  Measured on the quick preset (README): after 300 steps the ε-model's swaps were coloured noise inside
  the mask where the v-model's were blurry faces; after 1800 steps the v-model's still carried speckles and the
  x_0-model's were smooth.  The quick preset (minutes on a CPU) uses x0, the full one (days on a GPU) v.
  The identity weight is w(t) = ᾱ_t · 1[t < t_max] (:func:`id_loss_weight`).  Why this schedule: x̂_0 is the
  posterior mean E[x_0 | x_t], a blur whose detail grows with the signal fraction ᾱ_t = SNR/(1 + SNR) of x_t; an
  identity network judged on a blur at high noise gives gradients that mostly sharpen towards an average face rather than the person, so the weight follows
  ᾱ_t (→ 1 at low noise, → 0 at high noise) and is cut to zero above t_max, which also skips the cost of the
  identity network on most of the batch.  Samples whose condition was dropped (∅) get no identity loss;
* **sampling** (:func:`sample_swap`): DDIM (Song et al. 2021, eq. 12) with classifier-free guidance
  ε̃ = ε_θ(x_t, ∅) + s (ε_θ(x_t, e) − ε_θ(x_t, ∅)) (Ho & Salimans 2022, eq. 6; s = 1 conditional, s = 0
  unconditional) and optional identity-gradient guidance ε̂ = ε̃ − γ √(1−ᾱ_t) ∇_{x_t} cos(ID(x̂_0), e)
  (classifier guidance with log p(e | x_t) ∝ γ cos, Dhariwal & Nichol 2021, eq. 14 / Algorithm 2).

``ID(·)`` is :class:`dfs.faces.identity.DlibResNetEncoder` on the 150-pixel chip dlib would cut from the crop:
:func:`chip_matrix` reads dlib's own chip geometry (``dlib.get_face_chip_details`` on the 68 landmarks), and
``dfs.faces.align.warp_affine`` cuts it differentiably.

Training goes through :class:`dfs.train.Trainer` (:func:`train_swap`); :class:`DiffusionSwap` is the
:class:`~dfs.swap.pipeline.SwapMethod` that ``dfs swap`` and ``dfs eval --method diffusion`` use.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from dfs.diffusion import (NoiseSchedule, ddim_sample, ddim_timesteps, extract, ilvr_refine, predict_eps_from_v,
                           predict_eps_from_x0, predict_x0_from_eps, predict_x0_from_v, q_sample, sample_timesteps,
                           v_target)
from dfs import smoke
from dfs.device import batch_randn
from dfs.data.faces import resolved_data
from dfs.faces.align import IBUG68_GROUPS
from dfs.faces.identity_chips import (CHIP_PADDING, CHIP_SIZE, FaceEmbedder, chip_matrices, chip_matrix,  # noqa: F401
                                      identity_encoder, identity_of_crops, random_view)
from dfs.latent import EmbeddingTokens, cfg_eps, drop_condition
from dfs.swap.concept import Concept, check_base, load_concept
from dfs.swap.config import SamplerOptions, SwapConfig, check_compatible, config_from_dict, load_config
from dfs.swap.data import (SwapData, cross_pairs, identity_cosines, prepare_training_data,  # noqa: F401
                           to_uint8, to_unit, warped_references)
from dfs.swap.errors import SwapOutOfMemory, oom_message
from dfs.swap.shipped import shipped_checkpoint

LANDMARK_GROUPS = IBUG68_GROUPS               # one heatmap channel per part of the iBUG 68-point layout


# ---------------------------------------------------------------------------------------------------------------
# conditioning


def landmark_heatmaps(landmarks68: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(B, 68, 2) landmarks in crop pixels -> (B, 5, S, S) heatmaps, one per group of ``LANDMARK_GROUPS``:
    H_g(q) = max_{k in g} exp(−‖q − p_k‖² / (2σ²)), σ in pixels."""
    lm = torch.as_tensor(landmarks68, dtype=torch.float32)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"landmarks68 must be (B, 68, 2), got {tuple(lm.shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0 pixels, got {sigma}")
    r = torch.arange(size, dtype=lm.dtype, device=lm.device)
    dx2 = (r[None, None, :] - lm[..., 0:1]) ** 2                      # (B, 68, S) over x
    dy2 = (r[None, None, :] - lm[..., 1:2]) ** 2                      # (B, 68, S) over y
    g = torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2 * sigma ** 2))   # (B, 68, S, S)
    return torch.stack([g[:, list(idx)].amax(1) for idx in LANDMARK_GROUPS.values()], 1)


def condition_channels(source_pixels: bool = False) -> int:
    """Channels of c: masked target (3) + mask (1) + heatmaps (5), + the warped source (3) with ``source_pixels``."""
    return 3 + 1 + len(LANDMARK_GROUPS) + (3 if source_pixels else 0)


def id_loss_weight(sched: NoiseSchedule, t: torch.Tensor, t_max: int) -> torch.Tensor:
    """w(t) = ᾱ_t · 1[t < t_max] (module docstring: why)."""
    abar = sched.alphas_cumprod.to(t.device)[t].float()
    return torch.where(t < t_max, abar, torch.zeros_like(abar))


# ---------------------------------------------------------------------------------------------------------------
# the model


def build_swap_unet(cfg: SwapConfig):
    """A diffusers ``UNet2DConditionModel`` for the swap: input x_t ⊕ c (3 + 9 channels, 3 + 12 with
    ``source_pixels``), output y_θ (3 channels);
    no attention on the first ``plain_levels`` levels, cross-attention (width ``token_dim``) on the others and in
    the middle block.  Why not everywhere: a transformer block on an L×L level costs L⁴ (self-attention over L²
    positions), so at 64 px the 32×32 level alone made a training step 2× slower (measured: 2.05 s with
    attention from the 32×32 level, 1.01 s from 16×16, 0.58 s from 8×8; batch 8, one CPU thread), while the
    fine levels only need local detail, which the skip connections carry."""
    from diffusers import UNet2DConditionModel

    n, plain = len(cfg.block_out_channels), cfg.plain_levels
    return UNet2DConditionModel(
        sample_size=cfg.image_size, in_channels=3 + condition_channels(cfg.source_pixels), out_channels=3,
        block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups,
        down_block_types=("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",) * (n - plain),
        up_block_types=("CrossAttnUpBlock2D",) * (n - plain) + ("UpBlock2D",) * plain,
        mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=cfg.token_dim,
        attention_head_dim=cfg.attention_head_dim)


class SwapDiffusion(nn.Module):
    """ε_θ(x_t, t, c, τ(e)) with its identity tokens, and the training loss as ``forward`` (module docstring)."""

    def __init__(self, config: SwapConfig):
        super().__init__()
        self.config = config
        self.unet = build_swap_unet(config)
        self.id_proj = EmbeddingTokens(config.id_dim, config.id_tokens, config.token_dim)
        self.null_tokens = nn.Parameter(torch.randn(config.id_tokens, config.token_dim) / math.sqrt(config.token_dim))
        # identity standardisation ê = (e − μ) / σ per feature, μ and σ over the training faces (saved with the
        # weights; set by ``set_identity_statistics``)
        self.register_buffer("id_mean", torch.zeros(config.id_dim))
        self.register_buffer("id_std", torch.ones(config.id_dim))
        self.schedule = NoiseSchedule.from_name(config.schedule, config.T)

    def condition(self, target: torch.Tensor, mask: torch.Tensor, landmarks68: torch.Tensor,
                  reference: torch.Tensor | None = None) -> torch.Tensor:
        """c = [target ⊙ (1 − m), m, H(landmarks)] (+ [r ⊙ m] with ``source_pixels``): (B, 9 or 12, S, S) from
        target (B, 3, S, S) in [−1, 1], mask (B, 1, S, S) in [0, 1], landmarks (B, 68, 2) in crop pixels and the
        warped source r (B, 3, S, S) in [−1, 1] (:func:`warped_references`)."""
        S = self.config.image_size
        if target.shape[1:] != (3, S, S) or mask.shape[1:] != (1, S, S):
            raise ValueError(f"target must be (B, 3, {S}, {S}) and mask (B, 1, {S}, {S}); got {tuple(target.shape)} "
                             f"and {tuple(mask.shape)}")
        heat = landmark_heatmaps(landmarks68.to(target.device), S, self.config.heatmap_sigma * S).to(target.dtype)
        parts = [target * (1 - mask), mask, heat]
        if self.config.source_pixels:
            if reference is None or reference.shape != target.shape:
                raise ValueError(f"this model (source_pixels) needs the warped source as a reference of the "
                                 f"target's shape {tuple(target.shape)}, got "
                                 f"{None if reference is None else tuple(reference.shape)}")
            parts.append(reference.to(target) * mask)
        return torch.cat(parts, 1)

    def null_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """c with the source's pixels removed (zeros): the condition of the ∅ branch of classifier-free guidance,
        which keeps the target's context, mask and landmarks and drops everything of the source."""
        if not self.config.source_pixels:
            return cond
        return torch.cat([cond[:, :-3], torch.zeros_like(cond[:, -3:])], 1)

    @torch.no_grad()
    def set_identity_statistics(self, embeddings: torch.Tensor) -> None:
        """μ and σ of the identity standardisation from the training faces' embeddings (N, id_dim).

        Why: unit identity vectors of different people share most of their direction (dlib's: mean pairwise cosine
        ≈ 0.84 on LFW, ‖mean‖ ≈ 0.92), so a linear map of e gives nearly the same tokens for everyone, and the
        U-Net learns to ignore them (it did: ε with a person's tokens and with ∅ differed by 0.1 %).  Standardised,
        each feature varies by one unit between people."""
        e = torch.as_tensor(embeddings, dtype=self.id_mean.dtype)
        if e.ndim != 2 or e.shape[1] != self.config.id_dim or len(e) < 2:
            raise ValueError(f"embeddings must be (N >= 2, {self.config.id_dim}), got {tuple(e.shape)}")
        self.id_mean.copy_(e.mean(0))
        self.id_std.copy_(e.std(0).clamp_min(1e-6))

    def tokens(self, embedding: torch.Tensor | None, batch: int | None = None) -> torch.Tensor:
        """τ(e) = W (e − μ)/σ as (B, K, token_dim); ``None`` gives the null tokens ∅ for ``batch`` samples."""
        if embedding is None:
            return self.null_tokens.unsqueeze(0).expand(batch, -1, -1)
        e = embedding.to(self.null_tokens.dtype)
        return self.id_proj((e - self.id_mean) / self.id_std)

    def output(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """y_θ: the U-Net's output, ε, v or x̂_0 (``config.prediction``); with ``reference_skip`` the x̂_0 is
        the U-Net's output plus the condition's r ⊙ m (zero in the ∅ branch, :meth:`null_condition`), a residual
        on the warped source: the network learns what to change in the warp, not the face from scratch."""
        y = self.unet(torch.cat([x_t, cond.to(x_t.dtype)], 1), t, encoder_hidden_states=tokens.to(x_t.dtype)).sample
        return y + cond[:, -3:].to(y.dtype) if self.config.reference_skip else y

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """ε_θ(x_t, t, c, τ): the output itself, or ε̂ = √(1−ᾱ_t) x_t + √ᾱ_t v̂ for a v-model (what samplers take)."""
        out = self.output(x_t, t, cond, tokens)
        if self.config.prediction == "x0":
            return predict_eps_from_x0(self.schedule, x_t, t, out)
        return out if self.config.prediction == "eps" else predict_eps_from_v(self.schedule, x_t, t, out)

    def forward(self, target, mask, landmarks68, source_embedding, chip_M, reference=None, tokens=None,
                p_uncond: float | None = None) -> dict:
        """The training loss (module docstring) on a batch: returns {"loss", "mse", "id_loss", "rec_loss"}.

        t and ε come from the global RNG, which the Trainer seeds per step (exact resume).  A sample whose
        identity is dropped to ∅ (probability p_uncond) loses its warped source too (:meth:`null_condition`).
        ``tokens`` (B, K, token_dim): identity tokens to use instead of τ(e) (a learned concept,
        :mod:`dfs.personalize`); the identity loss still reads ``source_embedding``.  ``p_uncond``: this batch's
        drop probability instead of the configuration's."""
        cfg, sched = self.config, self.schedule
        B = target.shape[0]
        t = sample_timesteps(sched, B, target.device)      # per example, the same on any number of processes
        noise = batch_randn(target.shape, target)
        x_t = q_sample(sched, target, t, noise)
        cond = self.condition(target, mask, landmarks68, reference)
        tok = self.tokens(source_embedding) if tokens is None else tokens
        tok, dropped = drop_condition(tok, self.null_tokens, cfg.p_uncond if p_uncond is None else p_uncond)
        cond = torch.where(dropped.to(cond.device)[:, None, None, None], self.null_condition(cond), cond)
        out = self.output(x_t, t, cond, tok)
        want = {"eps": noise, "x0": target}.get(cfg.prediction)
        want = v_target(sched, target, t, noise) if want is None else want
        mse = torch.mean((out.float() - want.float()) ** 2)
        zero = mse.new_zeros(())
        id_loss, rec_loss = zero, zero
        if cfg.id_weight > 0 or cfg.rec_weight > 0:
            x0_hat = {"eps": lambda: predict_x0_from_eps(sched, x_t, t, out), "x0": lambda: out,
                      "v": lambda: predict_x0_from_v(sched, x_t, t, out)}[cfg.prediction]().clamp(-1, 1)
            if cfg.id_weight > 0:
                w = id_loss_weight(sched, t, cfg.id_t_max) * (~dropped.to(t.device)).float()
                sel = w > 0
                if sel.any():
                    m = mask[sel]
                    composite = m * x0_hat[sel] + (1 - m) * target[sel]
                    cos = (identity_of_crops(composite, chip_M[sel]) * source_embedding[sel].float()).sum(-1)
                    id_loss = (w[sel] * (1 - cos)).sum() / B
            if cfg.rec_weight > 0:
                rec_loss = torch.mean(((1 - mask) * (x0_hat - target)).float() ** 2)
        loss = mse + cfg.id_weight * id_loss + cfg.rec_weight * rec_loss
        return {"loss": loss, "mse": mse, "id_loss": id_loss, "rec_loss": rec_loss}


def swap_loss(model, batch, step: int):
    """The Trainer's loss function: ``model(*batch)`` through accelerate's wrapper (multi-GPU safe)."""
    return model(*batch)


# ---------------------------------------------------------------------------------------------------------------
# sampling


def guided_eps(model: SwapDiffusion, cond: torch.Tensor, tokens: torch.Tensor, guidance: float):
    """ε̃(x_t, t) = ε(x_t, ∅) + s (ε(x_t, e) − ε(x_t, ∅)) (``dfs.latent.cfg_eps``), both branches in one U-Net call;
    s = 1 is the conditional model alone, s = 0 the unconditional one."""
    B = tokens.shape[0]
    if guidance == 1:
        return lambda x, t: model.eps(x, t, cond, tokens)
    null, null_cond = model.tokens(None, B), model.null_condition(cond)
    if guidance == 0:
        return lambda x, t: model.eps(x, t, null_cond, null)
    both_c, both_tok = torch.cat([null_cond, cond]), torch.cat([null, tokens])

    def eps(x, t):
        e_u, e_c = model.eps(torch.cat([x, x]), torch.cat([t, t]), both_c, both_tok).chunk(2)
        return cfg_eps(e_u, e_c, guidance)
    return eps


def identity_guided(eps_fn, model: SwapDiffusion, target, mask, embedding, chip_M, scale: float, views: int = 0,
                    gradient: str = "x_t"):
    """Identity-gradient guidance towards the source's identity vector e, with ID(x̂_0) the identity of the
    composite m ⊙ x̂_0 + (1−m) ⊙ target:

    * ``gradient="x_t"``: ε̂ = ε̃ − γ √(1−ᾱ_t) ∇_{x_t} cos(ID(x̂_0), e) (Dhariwal & Nichol 2021, eq. 14), the
      gradient taken through the U-Net;
    * ``gradient="x0"``: x̂_0' = x̂_0 + γ (1−ᾱ_t)/ᾱ_t ∇_{x̂_0} cos(ID(x̂_0), e) and ε̂ = (x_t − √ᾱ_t x̂_0')/√(1−ᾱ_t)
      (eq. 2 solved for ε), a gradient step on the predicted image (Bansal et al. 2023, "universal guidance",
      §3.2).  It is the rule above with ∂x̂_0/∂x_t replaced by I/√ᾱ_t (ε held fixed), and it needs no backward
      pass through the U-Net: measured, 1.3 against 2.2 CPU-s per swap at 25 steps (README, "Identity guidance").

    ``views`` = 0 judges the composite itself.  ``views`` = K > 0 averages the cosine over K random views of it,
    each blurred (Gaussian, σ ~ U(0.5, 1.5) crop pixels) and shifted (U(−2, 2) chip pixels): the gradient of an
    expectation over transformations (Athalye et al. 2018, eq. 1), which cannot be raised by a pixel pattern that
    only the sharp, exactly placed chip reads.  Measured on 12 held-out pairs (README): with the exact composite
    half of the cosine gain vanishes under a 1-px blur; through views almost all of it stays.  The views' draws
    come from a fixed seed in call order and are shared by the batch, so a swap does not depend on the other
    swaps in its batch."""
    if gradient not in ("x_t", "x0"):
        raise ValueError(f"gradient must be 'x_t' or 'x0', got {gradient!r}")
    sched = model.schedule
    rng = torch.Generator().manual_seed(0)

    def cosine(x0):
        composite = mask * x0 + (1 - mask) * target
        if views == 0:
            return (identity_of_crops(composite, chip_M) * embedding.float()).sum()
        return sum((identity_of_crops(*random_view(composite, chip_M, rng)) * embedding.float()).sum()
                   for _ in range(views)) / views

    def eps(x, t):
        if gradient == "x0":
            x0 = predict_x0_from_eps(sched, x, t, eps_fn(x, t)).clamp(-1, 1)
            with torch.enable_grad():
                x0 = x0.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(cosine(x0), x0)
            a = extract(sched.alphas_cumprod, t, x)
            return (x - a.sqrt() * (x0.detach() + scale * (1 - a) / a * grad)) / (1 - a).sqrt()
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            e = eps_fn(x, t)
            (grad,) = torch.autograd.grad(cosine(predict_x0_from_eps(sched, x, t, e).clamp(-1, 1)), x)
        return e.detach() - scale * extract(sched.sqrt_one_minus_alphas_cumprod, t, x) * grad
    return eps


@torch.no_grad()
def sample_swap(model: SwapDiffusion, target: torch.Tensor, mask: torch.Tensor, landmarks68: torch.Tensor,
                embedding: torch.Tensor | None, steps: int = 25, guidance: float = 2.0, id_guidance: float = 0.0,
                id_views: int = 0, id_gradient: str = "x_t",
                chip_M: torch.Tensor | None = None, x_T: torch.Tensor | None = None,
                generator: torch.Generator | None = None, eta: float = 0.0, progress: bool = False,
                strength: float = 1.0, ilvr: int = 0, reference: torch.Tensor | None = None,
                tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Swapped crops x_0 (B, 3, S, S) in [−1, 1] by DDIM (``steps`` steps) with classifier-free guidance
    ``guidance`` and identity-gradient guidance ``id_guidance`` through ``id_views`` random views, taken
    through the U-Net or on x̂_0 (``id_gradient``; :func:`identity_guided`; module docstring).  ``embedding=None``: the
    unconditional model (an inpainting with no identity).  ``strength`` < 1 starts from the target itself noised to
    the first of the last ⌈strength · steps⌉ DDIM timesteps, x_{t_0} = √ᾱ_{t_0} x^tgt + √(1−ᾱ_{t_0}) x_T (eq. 2;
    SDEdit, Meng et al. 2022; diffusers' img2img ``strength``), which keeps the target's coarse layout (pose, light)
    and lets the identity tokens rewrite the detail.  ``ilvr`` = N > 0 refines every step towards the target's
    low-pass φ_N (ILVR, Choi et al. 2021; :func:`dfs.diffusion.ilvr_refine`): the swap keeps the target's
    (S/N)×(S/N) structure (head position, light) and the identity tokens write the detail above it.  Measured
    (README): at 32 px, N = 4 does not lower the pose error (4.00° vs 4.07°) and costs identity.  ``reference``:
    the warped sources (:func:`warped_references`) that a ``source_pixels`` model needs.  ``tokens`` (B, K,
    token_dim): identity tokens instead of τ(embedding) (a learned concept, :mod:`dfs.swap.concept`)."""
    if guidance < 0 or id_guidance < 0:
        raise ValueError(f"guidance and id_guidance must be >= 0, got {guidance}, {id_guidance}")
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    steps = smoke.cap(steps, "max_sampler_steps")          # DFS_SMOKE=1: a couple of DDIM steps (dfs.smoke)
    dev = next(model.parameters()).device
    target, mask = target.to(dev), mask.to(dev)
    cond = model.condition(target, mask, landmarks68.to(dev), None if reference is None else reference.to(dev))
    B = target.shape[0]
    if embedding is None:
        if id_guidance > 0:
            raise ValueError("identity guidance needs a source embedding")
        eps_fn = guided_eps(model, model.null_condition(cond), model.tokens(None, B), 1.0)
    else:
        embedding = embedding.to(dev)
        tokens = model.tokens(embedding) if tokens is None else tokens.to(dev)
        eps_fn = guided_eps(model, cond, tokens, guidance)
        if id_guidance > 0:
            if chip_M is None:
                chip_M = chip_matrices(landmarks68)
            eps_fn = identity_guided(eps_fn, model, target, mask, embedding, chip_M.to(dev), id_guidance, id_views,
                                     id_gradient)
    # one noise draw per sample (x_T, seeded per pair by DiffusionSwap): the start, SDEdit's start and ILVR's
    # y_t' all use it, so a swap depends on its own seed only, not on the batch it was sampled in
    noise = torch.randn(target.shape, generator=generator).to(dev) if x_T is None else x_T.to(dev)
    after_step = None
    if ilvr:
        def after_step(x, t_prev):
            return ilvr_refine(model.schedule, x, target, t_prev, ilvr, noise)
    timesteps, start = None, noise
    if strength < 1:
        k = max(1, math.ceil(strength * steps))
        timesteps = ddim_timesteps(model.schedule.T, steps)[steps - k:]
        # a model given the source's pixels starts from them (the warp composited into the target), so the
        # noised start carries the source's face rather than the target's
        x_start = target if reference is None else mask * reference.to(dev) + (1 - mask) * target
        start = q_sample(model.schedule, x_start, timesteps[0], noise)
    return ddim_sample(eps_fn, model.schedule, target.shape, steps, eta, generator, dev, clip_x0=1.0, x_T=start,
                       progress=progress, timesteps=timesteps, after_step=after_step)


@torch.no_grad()
def swap_identity_score(model: SwapDiffusion, data: SwapData, n: int = 8, steps: int = 10, guidance: float = 2.0,
                        seed: int = 0, id_guidance: float = 0.0, strength: float = 1.0, blur: float = 0.0,
                        id_views: int = 0, id_gradient: str = "x_t") -> dict:
    """Swap ``n`` cross-identity pairs of ``data`` (:func:`cross_pairs`) and return the mean cosines of ID(result)
    (blended through the mask) to the source's embedding and to the target's own (the identity the swap should
    replace; :func:`identity_cosines`, after a ``blur`` when > 0), and the results (B, 3, S, S) in [−1, 1]; for a
    ``source_pixels`` model also "warped": the warped sources blended through the same masks (the input it
    refines, what the classical swap would paste before its Poisson blending)."""
    i, j = cross_pairs(data, n, seed)
    was = model.training
    model.eval()
    tgt, mask, lm, chip = data.crops[i], data.masks[i], data.landmarks68[i], data.chip_M[i]
    x_T = torch.randn(tgt.shape, generator=torch.Generator().manual_seed(seed))
    ref = data.references(i, j) if model.config.source_pixels else None
    x0 = sample_swap(model, tgt, mask, lm, data.embeddings[j], steps, guidance, id_guidance, id_views, id_gradient, chip,
                     x_T,
                     strength=strength, reference=ref).cpu()
    model.train(was)
    out = mask * x0 + (1 - mask) * tgt
    extra = {} if ref is None else {"warped": mask * ref + (1 - mask) * tgt}
    return {**identity_cosines(out, data, i, j, blur), "results": out, "targets": i, "sources": j, **extra}


def identity_by_guidance(model: SwapDiffusion, data: SwapData, scales, n: int = 8, **options) -> dict[float, dict]:
    """:func:`swap_identity_score` at each classifier-free guidance scale of ``scales`` ({s: its dict}), on the same
    pairs and noise (``options`` pass on: steps, strength, seed, ...). ``dfs reproduce --smoke`` keeps the first
    ``max_grid`` scales."""
    scales = list(scales)[:smoke.cap(len(scales), "max_grid")]
    return {s: swap_identity_score(model, data, n=n, guidance=s, **options) for s in scales}


# ---------------------------------------------------------------------------------------------------------------
# training and checkpoints


def train_config(config: SwapConfig, progress: bool = True, checkpoint_dir: str | os.PathLike | None = None):
    from dfs.train import TrainConfig
    return TrainConfig(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                       warmup_steps=config.warmup_steps, grad_clip=config.grad_clip, ema_decay=config.ema_decay,
                       seed=config.seed, checkpoint_dir=str(checkpoint_dir or config.resolved_checkpoint_dir()),
                       checkpoint_every=config.checkpoint_every, log_every=config.log_every, progress=progress,
                       mixed_precision=config.mixed_precision,
                       extra={"swap_config": config.to_dict(), "data_dir": str(resolved_data(config.data))})


def saved_config(checkpoint: str | os.PathLike) -> dict:
    """The swap configuration stored in a checkpoint folder's state.json."""
    state = json.loads((Path(checkpoint) / "state.json").read_text())
    cfg = state.get("config", {}).get("extra", {}).get("swap_config")
    if cfg is None:
        raise ValueError(f"{checkpoint} is a dfs checkpoint but not of a face-swap model (no swap_config)")
    return cfg


def train_swap(config: SwapConfig | str = "quick", data=None, progress: bool = True,
               checkpoint_dir: str | os.PathLike | None = None, loss_fn=None, wandb_project: str | None = None):
    """Train (or resume) the swap model with :class:`dfs.train.Trainer`; returns the trainer after ``fit``.

    ``data``: a :class:`SwapData` (default: :func:`prepare_training_data`).  A checkpoint folder that already holds
    a run of another model configuration is refused (pass another ``checkpoint_dir``).  ``wandb_project``: log the
    losses and learning rate to wandb, and at the end a grid of swaps of training pairs with their identity
    cosines (:func:`log_samples`)."""
    from dfs.train import Trainer, latest_checkpoint

    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
    tcfg = train_config(cfg, progress, checkpoint_dir)
    tcfg.wandb_project = wandb_project
    last = latest_checkpoint(tcfg.checkpoint_dir)
    if last is not None:
        check_compatible(saved_config(last), cfg, f"the checkpoint {last}")
    data = data if data is not None else prepare_training_data(cfg, progress)
    torch.manual_seed(cfg.seed)  # the initial weights are a function of the seed (resume needs them)
    model = SwapDiffusion(cfg)
    model.set_identity_statistics(data.embeddings)   # a resumed run loads the saved ones (the same numbers)
    try:
        trainer = Trainer(model, loss_fn or swap_loss, data, tcfg)
        trainer.fit()
        log_samples(trainer, data)
    except torch.OutOfMemoryError as e:
        raise SwapOutOfMemory(oom_message("training", e)) from None
    return trainer


def log_samples(trainer, data: SwapData, n: int = 8, steps: int = 10) -> None:
    """To the trainer's wandb run (if any, which it then closes): a grid of ``n`` swaps of training pairs by the
    EMA model (:func:`swap_identity_score`) and their mean identity cosines to the source and to the target."""
    if trainer._wandb is None:
        return
    score = swap_identity_score(trainer.ema_model, data, n=min(n, len(data)), steps=steps)
    trainer.log_wandb({"samples/swaps": score["results"],
                       **{f"samples/{k}": v for k, v in score.items() if isinstance(v, float)}})
    trainer.finish_wandb()


def find_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """A checkpoint folder (``step_NNNNNNN`` with state.json) or a run folder (its newest checkpoint)."""
    from dfs.train import latest_checkpoint

    p = Path(checkpoint).expanduser()
    if (p / "state.json").is_file():
        return p
    last = latest_checkpoint(p)
    if last is None and (p / "aei").is_dir():
        raise ValueError(f"{p} is a FaceShifter run, not of a face-swap diffusion model: use --method faceshifter")
    if last is None:
        raise FileNotFoundError(f"no face-swap checkpoint at {p}: train one with `dfs train-swap --config quick` "
                                "or pass --checkpoint <run folder or step_NNNNNNN folder>")
    return last


def load_swap_model(checkpoint: str | os.PathLike, config: SwapConfig | None = None, ema: bool = True,
                    device=None) -> tuple[SwapDiffusion, SwapConfig, Path]:
    """(model in eval mode, its configuration, the checkpoint folder).  With ``config``, a checkpoint trained for
    another model configuration (image size, widths, tokens, ...) raises ValueError."""
    from dfs.train import load_weights

    path = find_checkpoint(checkpoint)
    saved = saved_config(path)
    if config is not None:
        check_compatible(saved, config, f"the checkpoint {path}")
    cfg = config or config_from_dict(saved, str(path))
    model = load_weights(SwapDiffusion(cfg), path, ema=ema).eval().requires_grad_(False)
    return model.to(device or "cpu"), cfg, path


# ---------------------------------------------------------------------------------------------------------------
# the pipeline adapter


def default_checkpoint() -> Path:
    """The shipped quick model (:mod:`dfs.swap.shipped`)."""
    return shipped_checkpoint("diffusion")


class DiffusionSwap:
    """The diffusion swap as a :class:`~dfs.swap.pipeline.SwapMethod`: crops at the model's size, DDIM with
    classifier-free (and optional identity) guidance, one seed per pair (its x_T)."""

    name = "diffusion"
    template = "ffhq"

    def __init__(self, checkpoint: str | os.PathLike | None = None, sampler: SamplerOptions | None = None,
                 batch_size: int = 8, device=None, model: SwapDiffusion | None = None, progress: bool = False,
                 concept=None, **sampler_options):
        """``sampler``: :class:`~dfs.swap.config.SamplerOptions` (or its fields as keywords: ``steps=10``); what
        is left None takes the checkpoint's default.  ``checkpoint``: default the shipped quick model.
        ``concept``: a :class:`~dfs.swap.concept.Concept` (or its name or file) whose identity tokens replace every
        source's τ(e) (and whose weight changes are added to the U-Net); it must have been made for these weights."""
        from dfs.device import get_device

        self.device = torch.device(device) if device is not None else get_device()
        if model is not None:
            self.model, self.config, self.checkpoint = model.eval().to(self.device), model.config, "in-memory model"
        else:
            self.model, self.config, path = load_swap_model(checkpoint or default_checkpoint(), device=self.device)
            self.checkpoint = str(path)
        self.concept = None
        if concept is not None:
            self.concept = concept if isinstance(concept, Concept) else load_concept(concept)
            check_base(self.concept, self.model, self.checkpoint)
            if self.concept.unet_delta and model is not None:   # leave the caller's model as it was
                import copy
                self.model = copy.deepcopy(self.model)
            self.concept.apply(self.model)
            self.checkpoint += f" + concept {self.concept.name} ({self.concept.mode})"
        cfg = self.config
        if sampler is not None and sampler_options:
            raise ValueError("pass the sampler options either as sampler=SamplerOptions(...) or as keywords")
        sampler_options = {k: v for k, v in sampler_options.items() if v is not None}
        unknown = set(sampler_options) - {f.name for f in dataclasses.fields(SamplerOptions)}
        if unknown:
            raise ValueError(f"unknown sampler option(s) {sorted(unknown)}; the options are the fields of "
                             "dfs.swap.config.SamplerOptions")
        self.sampler = (sampler or SamplerOptions(**sampler_options)).resolve(cfg)
        self.crop_size, self.template, self.batch_size = cfg.image_size, cfg.template, int(batch_size)
        self.progress = progress
        self._embedder = None

    def source_embeddings(self, sources) -> torch.Tensor:
        """The sources' identity vectors from their full photos (the chip dlib cuts, as in the training cache)."""
        if self._embedder is None:
            self._embedder = FaceEmbedder(identity_encoder("cpu"))
        return torch.from_numpy(self._embedder([(s.image, s.face) for s in sources])).float()

    def swap(self, sources, targets, context) -> list[np.ndarray]:
        """``context.options``: sampler options (:class:`~dfs.swap.config.SamplerOptions` fields) for this call."""
        o = SamplerOptions(**{**self.sampler.given(), **context.options}).resolve(self.config)
        steps = o.steps
        S = self.crop_size
        target = to_unit(np.stack([t.crop for t in targets]))
        mask = torch.from_numpy(np.stack([t.mask for t in targets])).float()[:, None]
        lm = torch.from_numpy(np.stack([t.landmarks68 for t in targets])).float()
        x_T = torch.stack([torch.randn(3, S, S, generator=context.generator(i, "cpu")) for i in range(len(targets))])
        ref = None
        if self.config.source_pixels:
            ref = warped_references([s.crop for s in sources], [s.landmarks68 for s in sources],
                                    [t.crop for t in targets], [t.landmarks68 for t in targets])
        tokens = None
        try:
            if self.concept is None:
                emb = self.source_embeddings(sources)
            else:                                   # the concept's identity, whatever photo gives the pixels
                emb = self.concept.embedding[None].expand(len(targets), -1).float()
                tokens = self.concept.tokens[None].expand(len(targets), -1, -1).float()
            x0 = sample_swap(self.model, target, mask, lm, emb, o.steps, o.guidance, o.id_guidance,
                             o.id_views, o.id_gradient,
                             chip_M=chip_matrices(lm) if o.id_guidance > 0 else None, x_T=x_T.to(self.device),
                             progress=self.progress, strength=o.strength, ilvr=o.ilvr, reference=ref,
                             tokens=tokens)
        except torch.OutOfMemoryError as e:
            raise SwapOutOfMemory(oom_message(f"sampling {len(targets)} swaps with {steps} steps", e)) from None
        out = ((x0.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return list(out)
