"""Builders over diffusers: autoencoders (KL, VQ), U-Nets (plain, cross-attention), and loading published weights.

    ae   = build_autoencoder("kl", f=4, in_channels=1, preset="tiny")      # diffusers AutoencoderKL
    vq   = build_autoencoder("vq", f=4, in_channels=1, preset="tiny")      # diffusers VQModel
    unet = build_unet(sample_size=16, in_channels=1, preset="tiny")         # UNet2DModel, ε(x_t, t)
    cond = build_cond_unet(sample_size=4, in_channels=4, cross_attention_dim=32)   # UNet2DConditionModel
    vae  = load_pretrained("stabilityai/sd-vae-ft-mse", "kl")               # a hub id ...
    vae  = load_pretrained("/path/to/saved/folder", "kl")                   # ... or a folder: the same code path

Nothing here is re-implemented: the networks are diffusers' own, configured small enough for a CPU. The
downsampling factor f of an autoencoder is 2^(number of blocks − 1) (Rombach et al. 2022, §3: a latent of size
h × w = H/f × W/f); a U-Net of n blocks halves its input n − 1 times.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

AE_KINDS = ("kl", "vq")

# Widths per level (the first |levels| entries are used), GroupNorm groups, resnets per level, mid-block attention.
AE_PRESETS = {
    "tiny": dict(channels=(8, 16, 32, 32, 32), norm_num_groups=4, layers_per_block=1, attention=False),
    "small": dict(channels=(32, 64, 128, 128, 128), norm_num_groups=16, layers_per_block=1, attention=True),
    "ldm": dict(channels=(128, 256, 512, 512, 512), norm_num_groups=32, layers_per_block=2, attention=True),
}
UNET_PRESETS = {
    "tiny": dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, attention_head_dim=8),
    "small": dict(block_out_channels=(64, 128, 128), layers_per_block=2, norm_num_groups=32, attention_head_dim=32),
    "base": dict(block_out_channels=(128, 256, 256, 256), layers_per_block=2, norm_num_groups=32,
                 attention_head_dim=64),
}
# Published checkpoints that keep a model in a subfolder of a pipeline repository: (name, kind) -> subfolder.
PUBLISHED_SUBFOLDERS = {
    ("CompVis/ldm-celebahq-256", "vq"): "vqvae",
    ("CompVis/ldm-celebahq-256", "unet"): "unet",
    ("CompVis/ldm-celebahq-256", "scheduler"): "scheduler",
    ("CompVis/ldm-text2im-large-256", "kl"): "vqvae",
    ("CompVis/ldm-text2im-large-256", "cond_unet"): "unet",
    ("CompVis/ldm-text2im-large-256", "scheduler"): "scheduler",
}


def _preset(table: dict, name: str, what: str) -> dict:
    if name not in table:
        raise ValueError(f"unknown {what} preset {name!r}; choose one of {sorted(table)} or pass the sizes yourself")
    return dict(table[name])


def _levels(f: int) -> int:
    if not (isinstance(f, int) and f >= 1 and f & (f - 1) == 0):
        raise ValueError(f"the downsampling factor f must be a power of two (1, 2, 4, 8, …), got {f!r}")
    return int(math.log2(f)) + 1


def _check_groups(channels, groups: int) -> None:
    bad = [c for c in channels if c % groups]
    if bad:
        raise ValueError(f"GroupNorm needs every width divisible by norm_num_groups={groups}; {bad} are not")


def build_autoencoder(kind: str = "kl", f: int = 4, in_channels: int = 1, latent_channels: int = 4,
                      sample_size: int = 16, preset: str = "tiny", channels=None, norm_num_groups: int | None = None,
                      layers_per_block: int | None = None, attention: bool | None = None,
                      num_vq_embeddings: int = 256):
    """A diffusers ``AutoencoderKL`` (``kind="kl"``) or ``VQModel`` (``kind="vq"``) with downsampling factor f.

    Images (B, in_channels, H, W) map to latents (B, latent_channels, H/f, W/f). ``preset`` gives the widths
    and depth; any of ``channels`` (one width per level, at least log2(f) + 1 of them), ``norm_num_groups``,
    ``layers_per_block`` and ``attention`` (self-attention in the mid block) override it. The VQ codebook has
    ``num_vq_embeddings`` vectors of size ``latent_channels``.
    """
    from diffusers import AutoencoderKL, VQModel

    if kind not in AE_KINDS:
        raise ValueError(f"unknown autoencoder kind {kind!r}; choose 'kl' (KL-regularised) or 'vq' (vector-quantised)")
    n = _levels(f)
    if sample_size % f:
        raise ValueError(f"sample_size={sample_size} is not divisible by f={f}")
    p = _preset(AE_PRESETS, preset, "autoencoder")
    channels = tuple(channels if channels is not None else p["channels"])
    if len(channels) < n:
        raise ValueError(f"f={f} needs {n} widths (one per level), got {len(channels)}: {channels}")
    channels = channels[:n]
    groups = norm_num_groups or p["norm_num_groups"]
    _check_groups(channels, groups)
    common = dict(in_channels=in_channels, out_channels=in_channels, latent_channels=latent_channels,
                  down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                  block_out_channels=channels, layers_per_block=layers_per_block or p["layers_per_block"],
                  norm_num_groups=groups, sample_size=sample_size,
                  mid_block_add_attention=p["attention"] if attention is None else attention)
    if kind == "kl":
        return AutoencoderKL(**common)
    return VQModel(num_vq_embeddings=num_vq_embeddings, **common)


def downsampling_factor(autoencoder) -> int:
    """f of a diffusers autoencoder: 2^(number of encoder blocks − 1)."""
    return 2 ** (len(autoencoder.config.block_out_channels) - 1)


def _unet_common(sample_size: int, preset: str, block_out_channels, layers_per_block, norm_num_groups) -> dict:
    p = _preset(UNET_PRESETS, preset, "U-Net")
    chans = tuple(block_out_channels or p["block_out_channels"])
    groups = norm_num_groups or p["norm_num_groups"]
    _check_groups(chans, groups)
    if sample_size % 2 ** (len(chans) - 1):
        raise ValueError(f"a {len(chans)}-level U-Net halves its input {len(chans) - 1} times: sample_size="
                         f"{sample_size} must be divisible by {2 ** (len(chans) - 1)}")
    return dict(sample_size=sample_size, block_out_channels=chans, norm_num_groups=groups,
                layers_per_block=layers_per_block or p["layers_per_block"]), p


def build_unet(sample_size: int = 16, in_channels: int = 1, out_channels: int | None = None, preset: str = "tiny",
               block_out_channels=None, layers_per_block: int | None = None, norm_num_groups: int | None = None,
               attention: bool = True):
    """A diffusers ``UNet2DModel`` ε_θ(x_t, t): ResNet blocks, self-attention on every level but the first
    (when ``attention``), sinusoidal timestep embedding (Ho et al. 2020, App. B)."""
    from diffusers import UNet2DModel

    common, p = _unet_common(sample_size, preset, block_out_channels, layers_per_block, norm_num_groups)
    n = len(common["block_out_channels"])
    down = ("DownBlock2D",) + (("AttnDownBlock2D" if attention else "DownBlock2D"),) * (n - 1)
    up = (("AttnUpBlock2D" if attention else "UpBlock2D"),) * (n - 1) + ("UpBlock2D",)
    return UNet2DModel(in_channels=in_channels, out_channels=out_channels or in_channels, down_block_types=down,
                       up_block_types=up, attention_head_dim=p["attention_head_dim"], add_attention=attention,
                       **common)


def build_cond_unet(sample_size: int = 4, in_channels: int = 4, cross_attention_dim: int = 32,
                    out_channels: int | None = None, preset: str = "tiny", block_out_channels=None,
                    layers_per_block: int | None = None, norm_num_groups: int | None = None):
    """A diffusers ``UNet2DConditionModel`` ε_θ(z_t, t, τ_θ(y)) with cross-attention on every level
    (Rombach et al. 2022, eq. 3 and Fig. 3): Attention(Q, K, V) = softmax(QKᵀ/√d)·V with Q = W_Q φ(z_t) from the
    U-Net's features and K = W_K τ_θ(y), V = W_V τ_θ(y) from the condition tokens of width
    ``cross_attention_dim`` (passed as ``encoder_hidden_states``, shape (B, tokens, cross_attention_dim))."""
    from diffusers import UNet2DConditionModel

    common, p = _unet_common(sample_size, preset, block_out_channels, layers_per_block, norm_num_groups)
    n = len(common["block_out_channels"])
    heads = max(1, min(common["block_out_channels"]) // p["attention_head_dim"])
    return UNet2DConditionModel(
        in_channels=in_channels, out_channels=out_channels or in_channels,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=cross_attention_dim,
        attention_head_dim=heads, **common)


def n_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ----------------------------------------------------------------------------------------------------------
# Loading: a hub id and a local folder go through the same call
# ----------------------------------------------------------------------------------------------------------


class WeightsUnavailable(OSError):
    """Published weights could not be loaded: not cached locally and no way (or no permission) to download."""


def _classes() -> dict:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UNet2DModel, VQModel

    return {"kl": AutoencoderKL, "vq": VQModel, "unet": UNet2DModel, "cond_unet": UNet2DConditionModel,
            "scheduler": DDPMScheduler}


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (read now, not at import time like huggingface_hub does)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_pretrained(name_or_path: str | os.PathLike, kind: str, subfolder: str | None = None, **kwargs):
    """Load a diffusers model (``kind`` in "kl", "vq", "unet", "cond_unet", "scheduler") from a Hugging Face hub
    id (``"stabilityai/sd-vae-ft-mse"``, ``"CompVis/ldm-celebahq-256"``) or a local folder written by
    ``save_pretrained`` — one code path, ``<class>.from_pretrained``.

    Pipeline repositories keep their parts in subfolders; for the ids in ``PUBLISHED_SUBFOLDERS`` the right one
    is picked (``load_pretrained("CompVis/ldm-celebahq-256", "vq")`` reads ``vqvae/``). A hub id that is not in
    the local cache needs internet once: with ``HF_HUB_OFFLINE=1`` (or no connection) this raises
    :class:`WeightsUnavailable` saying so, at once instead of retrying.
    """
    classes = _classes()
    if kind not in classes:
        raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(classes)}")
    cls, name = classes[kind], str(name_or_path)
    local = Path(name).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ValueError(f"{name} is a file; pass the folder that save_pretrained wrote (with config.json)")
        return cls.from_pretrained(str(local), subfolder=subfolder, **kwargs)
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise FileNotFoundError(f"{name!r} is neither an existing folder nor a hub id of the form 'owner/name'")
    subfolder = subfolder if subfolder is not None else PUBLISHED_SUBFOLDERS.get((name, kind))
    offline = hub_offline()
    kwargs.setdefault("local_files_only", offline)
    try:
        return cls.from_pretrained(name, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as e:  # huggingface_hub's errors derive from these
        why = ("HF_HUB_OFFLINE=1 forbids downloading" if offline or kwargs["local_files_only"]
               else "the Hugging Face Hub could not be reached")
        raise WeightsUnavailable(
            f"could not load {kind!r} weights {name!r}{f' (subfolder {subfolder!r})' if subfolder else ''}: they are "
            f"not in the local Hugging Face cache and {why}. The weights need internet once: run this once "
            f"online (unset HF_HUB_OFFLINE) to cache them, or pass a local folder written by save_pretrained. "
            f"[{type(e).__name__}: {str(e).splitlines()[0][:200]}]") from None
