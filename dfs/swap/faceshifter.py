"""FaceShifter (Li et al. 2019, "FaceShifter: Towards High Fidelity and Occlusion Aware Face Swapping"), the GAN
reference of the thesis (§1.1.4, ref. [4]), on the aligned crops of :mod:`dfs.swap.pipeline` (side S, [-1, 1]).

**Stage 1, AEI-Net** (§3.1): Ŷ_{s,t} = G(z_att(X_t), z_id(X_s)).

* identity encoder z_id: dlib's ResNet (:class:`dfs.faces.identity.DlibResNetEncoder`, frozen), a 128-D unit vector;
  in training the source's cached embedding, and ID(Ŷ) through :func:`dfs.faces.identity_chips.identity_of_crops`;
* multi-level attributes encoder z_att (:class:`AttributeEncoder`): a U-Net whose decoder feature maps are the
  attributes, z_att(X_t) = {z_att^1, …, z_att^n} (eq. 1), at 2, 4, …, S pixels;
* AAD generator (:class:`AADGenerator`): z_id → 2×2 by a transposed convolution, then one AAD ResBlk per level.
  Each AAD layer (:class:`AADLayer`) normalises h̄ = (h − μ)/σ (instance norm) and mixes
      A = γ_att ⊗ h̄ + β_att   (γ_att, β_att: convolutions of z_att^k)
      I = γ_id ⊗ h̄ + β_id     (γ_id, β_id: linear maps of z_id)
      h_out = (1 − M) ⊗ A + M ⊗ I,   M = σ(conv(h̄)) ∈ [0, 1]
  so M is where the generator takes identity (M → 1) rather than the target's attributes (M → 0);
* losses (:meth:`FaceShifterGAN.generator_losses`): L_AEI = L_adv + λ_att L_att + λ_id L_id + λ_rec L_rec with
      L_id  = 1 − cos(z_id(Ŷ), z_id(X_s))                      (:func:`identity_loss`)
      L_att = ½ Σ_k ‖z_att^k(Ŷ) − z_att^k(X_t)‖²               (:func:`attribute_loss`, mean over elements)
      L_rec = ½ ‖Ŷ − X_t‖² when X_s = X_t, else 0               (:func:`reconstruction_loss`)
  with the paper's λ_att = λ_rec = 10 and λ_id = 30 instead of its 5: the paper's identity encoder gives cosines
  ≈ 0 between different people, dlib's gives 0.83 ± 0.03 (same person 0.95) on the shared training faces, so
  1 − cos spans ≈ 0.12 here instead of ≈ 0.7, and λ_id = 5 · 6 keeps the paper's balance of the terms (the full
  preset's value; the quick preset, trained on 40 people, uses 100); a fraction ``p_same`` of the pairs has
  X_s = X_t;
* for the same reason ``id_center`` lets the generator read (z_id − μ)/σ, standardised with the training faces'
  vectors (:meth:`AEINet.set_identity_statistics`), so the small residual that tells people apart is not drowned
  by the part all dlib vectors share; the identity loss still compares the raw vectors;
* discriminator: pix2pixHD's multi-scale PatchGAN (:class:`MultiScaleDiscriminator`, the paper's choice) with
  spectral normalisation (Miyato et al. 2018; thesis §1.1.1) and the hinge loss (Lim & Ye 2017):
      L_D = E[max(0, 1 − D(X))] + E[max(0, 1 + D(Ŷ))],   L_adv = −E[D(Ŷ)]   (:func:`hinge_d_loss`, :func:`hinge_g_loss`)

**Stage 2, HEAR-Net** (§3.2), trained after AEI-Net, which stays frozen: the heuristic error
ΔY_t = X_t − AEI-Net(X_t, X_t) shows what AEI-Net cannot reconstruct (occlusions, glasses, hands); HEAR-Net, a
U-Net, refines Y_{s,t} = HEAR-Net(Ŷ_{s,t}, ΔY_t) and is trained self-supervised with
      L_HEAR = λ_id' L_id(Y) + λ_chg |Y − Ŷ|₁ + λ_rec ½‖Y − X_t‖² [X_s = X_t]   (:func:`hear_losses`)
(the paper: λ_id' = 1, ``hear_id_weight``; with dlib's narrow cosine range it needs the rescaling λ_id got, or
HEAR-Net learns to copy the target's face back from ΔY_t, which carries the target's identity wherever AEI-Net
reconstructs it poorly) on targets with synthetic occlusions (patches of other photos, :func:`dfs.swap.faceshifter_train.occlude`).  Here
HEAR-Net predicts a residual on Ŷ (last layer zero at initialisation, so it starts as the identity map and
L_chg = 0), which a short CPU run needs more than the 256-px original.

Configuration: :class:`FaceShifterConfig`, YAML presets ``faceshifter_quick.yaml`` (64 px, trains on a CPU) and
``faceshifter_full.yaml`` (256 px, the paper's widths, GPU).  Training: :mod:`dfs.swap.faceshifter_train`
(``dfs train-swap --model faceshifter``); :class:`FaceShifterSwap` is the pipeline's method ("faceshifter").
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from dfs.faces.identity_chips import FaceEmbedder, identity_encoder, identity_of_crops, random_view
from dfs.swap.config import check_compatible, load_yaml_config, resolve_checkpoint_dir
from dfs.swap.data import to_unit
from dfs.swap.config import config_from_dict as _config_from_dict

PRESETS = ("quick", "full")
MODEL_FIELDS = ("image_size", "template", "id_dim", "id_center", "enc_channels", "gen_channels", "disc_channels",
                "disc_layers", "disc_scales", "hear_channels")


# ---------------------------------------------------------------------------------------------------------------
# configuration


@dataclass
class FaceShifterConfig:
    # -- the model ----------------------------------------------------------------------------------------------
    image_size: int = 32                   # S, a power of two >= 32; the pipeline crops at this size
    template: str = "ffhq"
    id_dim: int = 128                      # z_id: dlib's ResNet embedding
    id_center: bool = False                # feed the generator (z_id − μ)/σ, μ and σ of the training faces' embeddings
                                           # (AEINet.set_identity_statistics): dlib's vectors of different people
                                           # share a large common part (cos ≈ 0.83), ArcFace's do not
    enc_channels: tuple = (16, 32, 64, 64)      # attribute encoder, at S/2, S/4, ..., 2 px (log2(S) - 1 levels)
    gen_channels: tuple = (64, 64, 32, 16)      # AAD ResBlk outputs at 2, 4, ..., S/2 px; the last block gives RGB
    disc_channels: int = 32                # first PatchGAN layer's width (doubling, at most 8x)
    disc_layers: int = 3                   # stride-2 layers per PatchGAN
    disc_scales: int = 2                   # discriminators on S, S/2, ...
    hear_channels: tuple = (32, 64, 128)   # HEAR-Net U-Net widths at S/2, S/4, ...
    # -- the losses (paper: λ_att = λ_rec = 10, λ_id = 5; HEAR-Net λ_chg = 1, λ_rec = 10) -----------------------
    adv_weight: float = 1.0
    att_weight: float = 10.0
    id_weight: float = 30.0                # the paper's 5 rescaled to dlib's cosine range (module docstring)
    rec_weight: float = 10.0
    p_same: float = 0.2                    # fraction of AEI-Net pairs with X_s = X_t (the reconstruction case)
    id_views: int = 0                      # L_id averaged over this many random blurred, shifted views of Ŷ
                                           # (identity_chips.random_view); 0: on Ŷ itself, as the paper
    id_jitter: float = 0.0                 # AEI-Net's other pairs: z_id(X_s) moved by a random offset of this norm
                                           # (faceshifter_train.jitter_identity); 0: the paper's sampling
    hear_id_weight: float = 1.0            # HEAR-Net's λ_id (the paper's 1; dlib's cosines need it rescaled, as id_weight)
    hear_chg_weight: float = 1.0
    hear_rec_weight: float = 10.0
    hear_p_same: float = 0.5
    hear_occlusion: float = 0.5            # fraction of HEAR-Net targets given a synthetic occlusion
    # -- data (the diffusion swap's: same identity split, same face cache) ---------------------------------------
    data: str | None = None
    held_out: float = 0.2
    split_seed: int = 0
    max_per_identity: int = 30
    cache_dir: str | None = None
    # -- training -----------------------------------------------------------------------------------------------
    steps: int = 1500                      # AEI-Net (generator and discriminator) steps
    hear_steps: int = 300                  # HEAR-Net steps, after AEI-Net
    batch_size: int = 8
    lr_g: float = 4e-4
    lr_d: float = 4e-4
    lr_hear: float = 4e-4
    beta1: float = 0.0                     # Adam betas (0, 0.999), as usual for GANs with spectral norm
    beta2: float = 0.999
    warmup_steps: int = 0
    ema_decay: float | None = 0.999        # EMA of AEI-Net (the generator) only; None: off
    grad_clip: float | None = None
    mixed_precision: str = "no"
    checkpoint_dir: str = "checkpoints/faceshifter-quick"   # holds aei/ and hear/
    checkpoint_every: int = 250
    log_every: int = 25
    seed: int = 0

    def __post_init__(self):
        S = int(self.image_size)
        levels = round(math.log2(S)) if S > 0 else 0
        if S < 32 or 2 ** levels != S:
            raise ValueError(f"image_size must be a power of two >= 32, got {self.image_size}")
        self.enc_channels = tuple(int(c) for c in self.enc_channels)
        self.gen_channels = tuple(int(c) for c in self.gen_channels)
        self.hear_channels = tuple(int(c) for c in self.hear_channels)
        if len(self.enc_channels) != levels - 1 or len(self.gen_channels) != levels - 1:
            raise ValueError(f"at image_size {S} the attribute encoder and the generator have log2(S) - 1 = "
                             f"{levels - 1} levels: enc_channels and gen_channels need {levels - 1} widths each, got "
                             f"{len(self.enc_channels)} and {len(self.gen_channels)}")
        if not 1 <= len(self.hear_channels) <= levels - 1:
            raise ValueError(f"hear_channels needs 1 to {levels - 1} widths at image_size {S}, "
                             f"got {len(self.hear_channels)}")
        if self.disc_scales < 1 or self.disc_layers < 1 or S // 2 ** (self.disc_scales - 1 + self.disc_layers) < 2:
            raise ValueError(f"disc_scales={self.disc_scales} with disc_layers={self.disc_layers} shrink a "
                             f"{S}-px image below two pixels; use fewer (and at least one of each)")
        for name in ("p_same", "hear_p_same", "hear_occlusion"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.id_views < 0:
            raise ValueError(f"id_views is a count and must be >= 0, got {self.id_views}")
        if self.id_jitter < 0:
            raise ValueError(f"id_jitter is a norm and must be >= 0, got {self.id_jitter}")
        if min(self.adv_weight, self.att_weight, self.id_weight, self.rec_weight, self.hear_chg_weight,
               self.hear_rec_weight, self.hear_id_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if self.template not in ("ffhq", "arcface"):
            raise ValueError(f"template must be 'ffhq' or 'arcface', got {self.template!r}")
        if self.steps < 0 or self.hear_steps < 0 or self.batch_size < 1:
            raise ValueError(f"steps, hear_steps must be >= 0 and batch_size >= 1, got {self.steps}, "
                             f"{self.hear_steps}, {self.batch_size}")

    @property
    def levels(self) -> int:
        """n: the attribute / generator levels, at 2, 4, ..., S pixels."""
        return round(math.log2(self.image_size))

    def model_dict(self) -> dict:
        d = asdict(self)
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in MODEL_FIELDS}

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def resolved_checkpoint_dir(self) -> Path:
        return resolve_checkpoint_dir(self.checkpoint_dir)

    def data_config(self):
        """The diffusion swap's configuration for the same faces (identity split, crop size, cache), for
        :func:`dfs.swap.data.prepare_training_data`: both models train and are judged on the same data."""
        from dfs.swap.config import SwapConfig
        keys = ("image_size", "template", "data", "held_out", "split_seed", "max_per_identity", "cache_dir",
                "batch_size")
        return SwapConfig(**{k: getattr(self, k) for k in keys})


def preset_path(name: str) -> Path:
    return Path(__file__).parent / "presets" / f"faceshifter_{name}.yaml"


def config_from_dict(d: dict, where: str = "the configuration") -> FaceShifterConfig:
    return _config_from_dict(d, where, FaceShifterConfig, "FaceShifter setting")


def load_config(name_or_path: str | os.PathLike = "quick", **overrides) -> FaceShifterConfig:
    """A preset (``quick``, ``full``: ``presets/faceshifter_<name>.yaml``) or a YAML file, with overrides."""
    return load_yaml_config(name_or_path, PRESETS, preset_path, FaceShifterConfig, overrides, "FaceShifter")


# ---------------------------------------------------------------------------------------------------------------
# AEI-Net


class AADLayer(nn.Module):
    """Adaptive attentional denormalisation (§3.1): h_out = (1 − M) ⊗ (γ_att ⊗ h̄ + β_att) + M ⊗ (γ_id ⊗ h̄ + β_id),
    h̄ the instance-normalised h, M = σ(conv(h̄)).  ``forward`` returns (h_out, M)."""

    def __init__(self, channels: int, att_channels: int, id_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.att = nn.Conv2d(att_channels, 2 * channels, 3, padding=1)     # γ_att, β_att
        self.id = nn.Linear(id_dim, 2 * channels)                           # γ_id, β_id
        self.mask = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, h, z_att, z_id):
        h = self.norm(h)
        gamma_att, beta_att = self.att(z_att).chunk(2, 1)
        gamma_id, beta_id = self.id(z_id)[:, :, None, None].chunk(2, 1)
        A = gamma_att * h + beta_att
        I = gamma_id * h + beta_id
        M = torch.sigmoid(self.mask(h))
        return (1 - M) * A + M * I, M


class AADResBlk(nn.Module):
    """[AAD → ReLU → conv3×3] × 2, plus the same once on the shortcut when the width changes (Fig. 3c)."""

    def __init__(self, cin: int, cout: int, att_channels: int, id_dim: int):
        super().__init__()
        self.aad1, self.conv1 = AADLayer(cin, att_channels, id_dim), nn.Conv2d(cin, cin, 3, padding=1)
        self.aad2, self.conv2 = AADLayer(cin, att_channels, id_dim), nn.Conv2d(cin, cout, 3, padding=1)
        self.learned_shortcut = cin != cout
        if self.learned_shortcut:
            self.aad3, self.conv3 = AADLayer(cin, att_channels, id_dim), nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, h, z_att, z_id, masks: list | None = None):
        x, m1 = self.aad1(h, z_att, z_id)
        x, m2 = self.aad2(self.conv1(F.relu(x)), z_att, z_id)
        x = self.conv2(F.relu(x))
        if masks is not None:
            masks += [m1, m2]
        if self.learned_shortcut:
            s, _ = self.aad3(h, z_att, z_id)
            return x + self.conv3(F.relu(s))
        return x + h


def _down(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1))


def _up(cin, cout):
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.1))


def _unet_levels(in_channels: int, channels) -> tuple[nn.ModuleList, nn.ModuleList, int]:
    """The U-Net halves shared by the attributes encoder and HEAR-Net: ``down`` halves the size at each of
    ``channels``; ``up`` doubles it back to S/2, each step's input being the previous output concatenated with the
    skip of the same size.  Returns (down, up, channels of the last concatenation)."""
    c = (in_channels,) + tuple(channels)
    down = nn.ModuleList(_down(c[k], c[k + 1]) for k in range(len(channels)))
    up, prev = nn.ModuleList(), channels[-1]
    for k in range(len(channels) - 2, -1, -1):
        up.append(_up(prev, channels[k]))
        prev = 2 * channels[k]
    return down, up, prev


class AttributeEncoder(nn.Module):
    """The multi-level attributes encoder (§3.1, eq. 1): a U-Net on X_t whose decoder outputs are
    z_att^1 (2×2) … z_att^{n-1} (S/2), and z_att^n = z_att^{n-1} upsampled bilinearly to S."""

    def __init__(self, channels: tuple):
        super().__init__()
        # decoder: from the 2x2 bottleneck up to S/2; the input of step j is the previous z_att (concatenated)
        self.down, self.up, _ = _unet_levels(3, channels)

    @staticmethod
    def channels(enc_channels: tuple) -> list[int]:
        """Widths of z_att^1 … z_att^n."""
        inner = [2 * c for c in reversed(enc_channels[:-1])]
        return [enc_channels[-1]] + inner + [inner[-1] if inner else enc_channels[-1]]

    def forward(self, x):
        feats = []
        for layer in self.down:
            x = layer(x)
            feats.append(x)
        z = [feats[-1]]
        for j, layer in enumerate(self.up):
            z.append(torch.cat([layer(z[-1]), feats[-2 - j]], 1))
        z.append(F.interpolate(z[-1], scale_factor=2, mode="bilinear", align_corners=False))
        return z


class AADGenerator(nn.Module):
    """z_id → ConvTranspose to 2×2 → AAD ResBlk per level (×2 bilinear upsampling between levels) → tanh."""

    def __init__(self, id_dim: int, att_channels: list[int], gen_channels: tuple):
        super().__init__()
        outs = list(gen_channels) + [3]
        ins = [gen_channels[0]] + list(gen_channels)
        self.inp = nn.ConvTranspose2d(id_dim, gen_channels[0], 2)
        self.blocks = nn.ModuleList(AADResBlk(ci, co, ca, id_dim) for ci, co, ca in zip(ins, outs, att_channels))

    def forward(self, z_att: list, z_id, masks: list | None = None):
        h = self.inp(z_id[:, :, None, None])
        for k, block in enumerate(self.blocks):
            h = block(h, z_att[k], z_id, masks)
            if k < len(self.blocks) - 1:
                h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        return torch.tanh(h)


class AEINet(nn.Module):
    """Ŷ_{s,t} = AEI-Net(X_t, z_id(X_s)): ``forward`` returns (Ŷ, z_att(X_t)); :meth:`with_masks` also the AAD
    attention masks M, two per AAD ResBlk (plus the shortcut's, not returned), from 2×2 to S."""

    def __init__(self, config: FaceShifterConfig):
        super().__init__()
        self.config = config
        self.encoder = AttributeEncoder(config.enc_channels)
        self.generator = AADGenerator(config.id_dim, AttributeEncoder.channels(config.enc_channels),
                                      config.gen_channels)
        if config.id_center:          # set from the training faces before training; saved with the weights
            self.register_buffer("id_mean", torch.zeros(config.id_dim))
            self.register_buffer("id_scale", torch.ones(()))

    @torch.no_grad()
    def set_identity_statistics(self, embeddings: torch.Tensor) -> None:
        """μ = the mean of the training faces' identity vectors (N, id_dim) and σ = the standard deviation of
        their entries around it, with which :meth:`identity_input` standardises z_id (``config.id_center``)."""
        if not self.config.id_center:
            raise ValueError("this AEI-Net has id_center: false; it feeds z_id to the generator unchanged")
        if embeddings.ndim != 2 or embeddings.shape[1] != self.config.id_dim or len(embeddings) < 2:
            raise ValueError(f"need at least two identity vectors of {self.config.id_dim} numbers, got "
                             f"{tuple(embeddings.shape)}")
        mean = embeddings.double().mean(0)
        self.id_mean.copy_(mean)
        self.id_scale.copy_((embeddings.double() - mean).std())

    def identity_input(self, z_id: torch.Tensor, dtype) -> torch.Tensor:
        """What the AAD generator reads: z_id itself, or (z_id − μ)/σ with ``config.id_center``."""
        if self.config.id_center:
            z_id = (z_id - self.id_mean) / self.id_scale
        return z_id.to(dtype)

    def _check(self, x_t, z_id):
        S = self.config.image_size
        if x_t.ndim != 4 or x_t.shape[1:] != (3, S, S):
            raise ValueError(f"x_t must be (B, 3, {S}, {S}) in [-1, 1], got {tuple(x_t.shape)}")
        if z_id.shape != (x_t.shape[0], self.config.id_dim):
            raise ValueError(f"z_id must be (B, {self.config.id_dim}) for {x_t.shape[0]} targets, got "
                             f"{tuple(z_id.shape)}")

    def forward(self, x_t, z_id):
        self._check(x_t, z_id)
        z_att = self.encoder(x_t)
        return self.generator(z_att, self.identity_input(z_id, x_t.dtype)), z_att

    def with_masks(self, x_t, z_id):
        """(Ŷ, [M of each AAD layer on the main path, (B, 1, h, h) from 2×2 up to S×S])."""
        self._check(x_t, z_id)
        masks: list = []
        y = self.generator(self.encoder(x_t), self.identity_input(z_id, x_t.dtype), masks)
        return y, masks


# ---------------------------------------------------------------------------------------------------------------
# the discriminator


class PatchDiscriminator(nn.Module):
    """A PatchGAN (pix2pix): stride-2 4×4 convolutions, one stride-1 layer, a 1-channel logit map; spectral norm."""

    def __init__(self, channels: int, layers: int):
        super().__init__()
        seq, c = [spectral_norm(nn.Conv2d(3, channels, 4, 2, 1)), nn.LeakyReLU(0.2)], channels
        for i in range(1, layers + 1):
            c2 = channels * min(2 ** i, 8)
            stride = 2 if i < layers else 1
            seq += [spectral_norm(nn.Conv2d(c, c2, 4, stride, 1)), nn.LeakyReLU(0.2)]
            c = c2
        seq.append(spectral_norm(nn.Conv2d(c, 1, 3, 1, 1)))
        self.net = nn.Sequential(*seq)

    def forward(self, x):
        return self.net(x)


class MultiScaleDiscriminator(nn.Module):
    """pix2pixHD's multi-scale discriminator: one PatchGAN per scale, the image average-pooled by 2 between them.
    Returns the list of logit maps."""

    def __init__(self, channels: int, layers: int, scales: int):
        super().__init__()
        self.nets = nn.ModuleList(PatchDiscriminator(channels, layers) for _ in range(scales))

    def forward(self, x):
        out = []
        for k, net in enumerate(self.nets):
            if k:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(net(x))
        return out


# ---------------------------------------------------------------------------------------------------------------
# losses: plain tensor functions


def hinge_d_loss(real_logits: list, fake_logits: list) -> torch.Tensor:
    """L_D = Σ_scales (E[max(0, 1 − D(x))] + E[max(0, 1 + D(ŷ))]) / scales."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits)]
    return torch.stack(terms).mean()


def hinge_g_loss(fake_logits: list) -> torch.Tensor:
    """L_adv = −Σ_scales E[D(ŷ)] / scales (the generator's hinge loss)."""
    return -torch.stack([f.mean() for f in fake_logits]).mean()


def identity_loss(z_result: torch.Tensor, z_source: torch.Tensor) -> torch.Tensor:
    """L_id = E[1 − cos(z_id(Ŷ), z_id(X_s))]."""
    return (1 - F.cosine_similarity(z_result.float(), z_source.float(), dim=-1)).mean()


def aei_identity_loss(y: torch.Tensor, chip_M: torch.Tensor, z_source: torch.Tensor, views: int = 0) -> torch.Tensor:
    """L_id of AEI-Net: :func:`identity_loss` on Ŷ (``views`` = 0, the paper), or its mean over ``views`` random
    views of Ŷ (:func:`dfs.faces.identity_chips.random_view`, drawn from the global generator, which the Trainer
    seeds per step): E_v[1 − cos(z_id(v(Ŷ)), z_id(X_s))], an expectation over transformations (Athalye et al.
    2018, eq. 1) that a pattern only the sharp chip reads cannot lower."""
    if views == 0:
        return identity_loss(identity_of_crops(y, chip_M), z_source)
    return sum(identity_loss(identity_of_crops(*random_view(y, chip_M)), z_source) for _ in range(views)) / views


def attribute_loss(z_att_result: list, z_att_target: list) -> torch.Tensor:
    """L_att = ½ Σ_k mean((z_att^k(Ŷ) − z_att^k(X_t))²), the mean over batch, channels and pixels of each level."""
    return 0.5 * sum(((a.float() - b.float()) ** 2).mean() for a, b in zip(z_att_result, z_att_target))


def same_pair_weights(same: torch.Tensor) -> torch.Tensor:
    """w_i = same_i · B / Σ_j same_j over a whole batch of B pairs (0 everywhere when no pair has X_s = X_t).

    The mean of w_i · ℓ_i over the batch is the mean of ℓ_i over its same-person pairs, and so is the average of the
    means over any equal split of the rows: the split a data-parallel run makes (``dfs.train``).  A count of the
    same-person pairs in each process's share would not be."""
    same = same.float().reshape(-1)
    return same * len(same) / same.sum().clamp(min=1)


def reconstruction_loss(y: torch.Tensor, x_t: torch.Tensor, same_weight: torch.Tensor) -> torch.Tensor:
    """L_rec = ½ ‖Ŷ − X_t‖² (mean over pixels) averaged over the pairs with X_s = X_t: the mean of w_i ℓ_i with
    the weights of :func:`same_pair_weights` (computed on the whole batch); 0 if there is no such pair."""
    per = 0.5 * ((y.float() - x_t.float()) ** 2).flatten(1).mean(1)
    return (per * same_weight.float().reshape(-1)).mean()


def change_loss(y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """L_chg = |Y − Ŷ|₁ (mean absolute change HEAR-Net makes to AEI-Net's result)."""
    return (y.float() - y_hat.float()).abs().mean()


# ---------------------------------------------------------------------------------------------------------------
# stage 1 as one module (the Trainer's model: AEI-Net + discriminator)


class FaceShifterGAN(nn.Module):
    """AEI-Net (``aei``) and its discriminator (``disc``).  ``forward(batch, part="g"|"d")`` computes one player's
    losses, so a two-optimiser step goes through the (accelerate-wrapped) module's ``forward``."""

    def __init__(self, config: FaceShifterConfig):
        super().__init__()
        self.config = config
        self.aei = AEINet(config)
        self.disc = MultiScaleDiscriminator(config.disc_channels, config.disc_layers, config.disc_scales)

    def forward(self, x_t, z_s, chip_M, same_weight, *_, part: str = "g", fake=None) -> dict:
        if part == "g":
            return self.generator_losses(x_t, z_s, chip_M, same_weight)
        if part == "d":
            return self.discriminator_losses(x_t, fake)
        raise ValueError(f"part must be 'g' or 'd', got {part!r}")

    def generator_losses(self, x_t, z_s, chip_M, same_weight) -> dict:
        """L_AEI and its terms for the batch (module docstring); "fake" is Ŷ for the discriminator's step."""

        cfg = self.config
        y, z_att = self.aei(x_t, z_s)
        self.disc.requires_grad_(False)      # the generator's step needs no discriminator weight gradients
        try:
            adv = hinge_g_loss(self.disc(y))
        finally:
            self.disc.requires_grad_(True)
        ident = aei_identity_loss(y, chip_M, z_s, cfg.id_views)
        att = attribute_loss(self.aei.encoder(y), z_att)
        rec = reconstruction_loss(y, x_t, same_weight)
        loss = cfg.adv_weight * adv + cfg.att_weight * att + cfg.id_weight * ident + cfg.rec_weight * rec
        return {"loss": loss, "adv": adv, "id": ident, "att": att, "rec": rec, "fake": y}

    def discriminator_losses(self, real, fake) -> dict:
        if fake is None:
            raise ValueError("the discriminator's step needs fake=Ŷ (detached) from the generator's step")
        d_real, d_fake = self.disc(real), self.disc(fake.detach())
        loss = hinge_d_loss(d_real, d_fake)
        return {"loss": loss, "real": torch.stack([r.mean() for r in d_real]).mean(),
                "fake_logit": torch.stack([f.mean() for f in d_fake]).mean()}


# ---------------------------------------------------------------------------------------------------------------
# HEAR-Net


class HEARNet(nn.Module):
    """Y_{s,t} = HEAR-Net(Ŷ_{s,t}, ΔY_t) (§3.2): a U-Net on the 6 channels [Ŷ, ΔY]; it outputs Ŷ + r with the
    residual r's last convolution zero at initialisation (module docstring)."""

    def __init__(self, config: FaceShifterConfig):
        super().__init__()
        ch = config.hear_channels
        self.down, self.up, prev = _unet_levels(6, ch)
        self.out = nn.ConvTranspose2d(prev, 32, 4, 2, 1)
        self.final = nn.Conv2d(32 + 6, 3, 3, padding=1)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    def forward(self, y_hat, delta):
        x = torch.cat([y_hat, delta], 1)
        feats, h = [], x
        for layer in self.down:
            h = layer(h)
            feats.append(h)
        for j, layer in enumerate(self.up):
            h = torch.cat([layer(h), feats[-2 - j]], 1)
        h = F.leaky_relu(self.out(h), 0.1)
        return y_hat + self.final(torch.cat([h, x], 1))


def heuristic_error(aei: AEINet, x_t, z_t) -> torch.Tensor:
    """ΔY_t = X_t − AEI-Net(X_t, X_t) (§3.2): what AEI-Net fails to reconstruct of the target itself."""
    return x_t - aei(x_t, z_t)[0]


def hear_losses(hear: HEARNet, aei: AEINet, x_t, z_s, z_t, chip_M, same_weight, config: FaceShifterConfig) -> dict:
    """L_HEAR = λ_id' L_id + λ_chg L_chg + λ_rec L_rec on a batch (FaceShifter §3.2; AEI-Net frozen; module
    docstring)."""

    with torch.no_grad():
        y_hat = aei(x_t, z_s)[0]
        delta = heuristic_error(aei, x_t, z_t)
    y = hear(y_hat, delta)
    ident = identity_loss(identity_of_crops(y, chip_M), z_s)
    chg = change_loss(y, y_hat)
    rec = reconstruction_loss(y, x_t, same_weight)
    loss = config.hear_id_weight * ident + config.hear_chg_weight * chg + config.hear_rec_weight * rec
    return {"loss": loss, "id": ident, "chg": chg, "rec": rec}


# ---------------------------------------------------------------------------------------------------------------
# checkpoints


def saved_config(checkpoint: str | os.PathLike) -> dict:
    """The FaceShifter configuration stored in a checkpoint folder's state.json."""
    state = json.loads((Path(checkpoint) / "state.json").read_text())
    extra = state.get("config", {}).get("extra", {})
    if "faceshifter_config" not in extra:
        other = " (it is a diffusion-swap checkpoint: use --method diffusion)" if "swap_config" in extra else ""
        raise ValueError(f"{checkpoint} is a dfs checkpoint but not of a FaceShifter model{other}")
    return extra["faceshifter_config"]


def find_run(checkpoint: str | os.PathLike) -> tuple[Path, Path | None]:
    """(AEI-Net checkpoint, HEAR-Net checkpoint or None) of a run folder (``<run>/aei``, ``<run>/hear``), or of
    an ``aei/step_NNNNNNN`` folder (then no HEAR-Net)."""
    from dfs.train import latest_checkpoint

    p = Path(checkpoint).expanduser()
    if (p / "state.json").is_file():
        return p, None

    def stage(folder: Path) -> Path | None:   # a shipped stage holds state.json itself (dfs.swap.shipped)
        return folder if (folder / "state.json").is_file() else latest_checkpoint(folder)

    aei = stage(p / "aei")
    if aei is None:
        if latest_checkpoint(p) is not None:
            raise ValueError(f"{p} holds dfs checkpoints but no aei/ folder: it is not a FaceShifter run "
                             "(for a diffusion-swap run use --method diffusion)")
        raise FileNotFoundError(f"no FaceShifter checkpoint at {p}: train one with `dfs train-swap --model "
                                "faceshifter --config quick` or pass --checkpoint <run folder>")
    return aei, stage(p / "hear")


def run_history(checkpoint: str | os.PathLike) -> dict[str, list[dict]]:
    """The logged training curves of a run, {"aei": [...], "hear": [...]}, from its newest checkpoints."""
    aei, hear = find_run(checkpoint)
    paths = {"aei": aei, **({"hear": hear} if hear is not None else {})}
    return {k: json.loads((p / "state.json").read_text())["history"] for k, p in paths.items()}


def load_faceshifter(checkpoint: str | os.PathLike, config: FaceShifterConfig | None = None, ema: bool = True,
                     hear: bool = True, device=None) -> tuple[AEINet, HEARNet | None, FaceShifterConfig, Path]:
    """(AEI-Net, HEAR-Net or None, configuration, AEI-Net checkpoint folder), in eval mode.  With ``config``, a
    checkpoint of another model configuration raises ValueError; ``hear=False`` skips HEAR-Net."""
    from dfs.train import load_weights, weight_files

    aei_path, hear_path = find_run(checkpoint)
    saved = saved_config(aei_path)
    if config is not None:
        check_compatible(saved, config, f"the checkpoint {aei_path}")
    cfg = config or config_from_dict(saved, str(aei_path))
    aei = AEINet(cfg)
    if ema and weight_files(aei_path, "ema"):
        load_weights(aei, aei_path)
    else:
        gan = load_weights(FaceShifterGAN(cfg), aei_path / "model.safetensors")
        aei = gan.aei
    net = None
    if hear and hear_path is not None:
        check_compatible(saved_config(hear_path), cfg, f"the checkpoint {hear_path}")
        net = load_weights(HEARNet(cfg), hear_path, ema=ema).eval().requires_grad_(False).to(device or "cpu")
    return aei.eval().requires_grad_(False).to(device or "cpu"), net, cfg, aei_path


# ---------------------------------------------------------------------------------------------------------------
# the pipeline adapter


def default_checkpoint() -> Path:
    """The shipped quick FaceShifter (:mod:`dfs.swap.shipped`)."""
    from dfs.swap.shipped import shipped_checkpoint
    return shipped_checkpoint("faceshifter")


class FaceShifterSwap:
    """FaceShifter as a :class:`~dfs.swap.pipeline.SwapMethod`: one AEI-Net forward pass (and HEAR-Net's, when
    trained and ``hear``) per batch of pairs; deterministic (the seeds are not used)."""

    name = "faceshifter"
    template = "ffhq"

    def __init__(self, checkpoint: str | os.PathLike | None = None, hear: bool = True, batch_size: int = 8,
                 device=None, aei: AEINet | None = None, hear_net: HEARNet | None = None):
        from dfs.device import get_device

        self.device = torch.device(device) if device is not None else get_device()
        if aei is not None:
            self.aei, self.hear, self.config = aei.eval().to(self.device), hear_net, aei.config
            self.checkpoint = "in-memory model"
        else:
            self.aei, self.hear, self.config, path = load_faceshifter(checkpoint or default_checkpoint(),
                                                                      hear=hear, device=self.device)
            self.checkpoint = str(path.parent.parent if path.parent.name == "aei" else
                                  path.parent if path.name == "aei" else path)
        if self.hear is not None:
            self.hear = self.hear.eval().to(self.device)
        self.use_hear = bool(hear) and self.hear is not None
        self.crop_size, self.template = self.config.image_size, self.config.template
        self.batch_size = int(batch_size)
        self._embedder = None

    def embeddings(self, faces) -> torch.Tensor:
        """Identity vectors of aligned faces from their full photos (the chip dlib cuts, as in the training cache)."""
        if self._embedder is None:
            self._embedder = FaceEmbedder(identity_encoder("cpu"))
        return torch.from_numpy(self._embedder([(f.image, f.face) for f in faces])).float()

    @torch.no_grad()
    def swap_tensors(self, x_t, z_s, z_t=None) -> torch.Tensor:
        """Crops (B, 3, S, S) in [−1, 1] → swapped crops: AEI-Net, then HEAR-Net (needs the targets' z_t)."""
        x_t, z_s = x_t.to(self.device), z_s.to(self.device)
        y = self.aei(x_t, z_s)[0]
        if self.use_hear:
            if z_t is None:
                raise ValueError("HEAR-Net needs the targets' identity vectors z_t (for ΔY_t = X_t − AEI(X_t, X_t))")
            y = self.hear(y, heuristic_error(self.aei, x_t, z_t.to(self.device)))
        return y.clamp(-1, 1)

    def swap(self, sources, targets, context) -> list[np.ndarray]:
        x_t = to_unit(np.stack([t.crop for t in targets]))
        z_t = self.embeddings(targets) if self.use_hear else None
        y = self.swap_tensors(x_t, self.embeddings(sources), z_t)
        return list(((y.float() + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())
