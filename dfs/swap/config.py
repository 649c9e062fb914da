"""The face-swap model's settings: one dataclass, read from YAML presets (``quick``, ``full``) or a file.

    cfg = load_config("quick")                    # dfs/swap/presets/quick.yaml
    cfg = load_config("my_run.yaml")              # any YAML file with a subset of the fields below
    cfg = load_config("quick", steps=50)          # overrides

The fields fall in three groups: the model (what a checkpoint must match to be loaded), the training run, and
the sampler's defaults.  ``MODEL_FIELDS`` lists the first group; a checkpoint written with other values cannot be
loaded into this configuration (``check_compatible``).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from dfs import smoke

PRESETS = ("quick", "full", "quick_tokens")
MODEL_FIELDS = ("image_size", "template", "block_out_channels", "layers_per_block", "norm_num_groups",
                "plain_levels", "attention_head_dim", "id_dim", "id_tokens", "token_dim", "heatmap_sigma",
                "schedule", "T", "prediction", "source_pixels", "reference_skip")


@dataclass
class SwapConfig:
    # -- the model ----------------------------------------------------------------------------------------------
    image_size: int = 32                   # aligned crop side S (pixels); the pipeline crops at this size
    template: str = "ffhq"                 # dfs.faces.align template of the crops
    block_out_channels: tuple = (32, 64, 128)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    plain_levels: int = 1                  # levels from full resolution down without attention; the rest (and the
                                           # middle block) read the identity tokens by cross-attention
    attention_head_dim: int = 8            # channels per attention head
    id_dim: int = 128                      # identity embedding size (dlib ResNet: 128)
    id_tokens: int = 4                     # K: identity tokens for cross-attention
    token_dim: int = 64                    # width of each token (the U-Net's cross_attention_dim)
    heatmap_sigma: float = 0.02            # landmark heatmap standard deviation, fraction of S
    schedule: str = "cosine"               # dfs.diffusion schedule name
    T: int = 1000
    prediction: str = "v"                  # what the U-Net outputs: "eps" (ε), "v" (√ᾱ ε − √(1−ᾱ) x_0) or "x0"
    source_pixels: bool = False            # also condition on the source's pixels: its crop warped onto the
                                           # target's landmarks and colour-matched (3 more input channels);
                                           # False: the identity tokens alone carry the source (the ablation)
    reference_skip: bool = False           # x0-prediction with source_pixels: x̂_0 = U-Net output + r ⊙ m, so an
                                           # untrained network already returns the warped source inside the mask
    # -- the losses ---------------------------------------------------------------------------------------------
    p_uncond: float = 0.1                  # identity tokens -> null tokens with this probability (CFG)
    id_weight: float = 0.1                 # lambda_id of the identity loss (0 turns it off)
    id_t_max: int = 400                    # identity loss only for t < id_t_max (code timesteps)
    rec_weight: float = 0.0                # reconstruction of x_0 outside the mask (0: off)
    # -- training -----------------------------------------------------------------------------------------------
    data: str | None = None                # faces folder (None: DFS_DATA / data/)
    held_out: float = 0.2                  # identities held out for evaluation (the split dfs eval uses)
    split_seed: int = 0
    max_per_identity: int = 30
    flip: bool = True                      # mirror training targets left-right with probability 1/2
    warp_jitter: float = 0.01              # source_pixels: landmark noise before the training warp, fraction of S
    colour_jitter: float = 0.05            # source_pixels: gain noise per channel, one offset, on the training warp
    blur_prob: float = 0.3                 # source_pixels: probability of a Gaussian blur of the training warp
    p_cross: float = 0.0                   # source_pixels: fraction of cross-identity pairs (x_0 = the clean warp
    cross_after: int = 0                   # inside the mask), from training step cross_after on (dfs.swap.data)
    cache_dir: str | None = None           # aligned-crop cache (None: <user cache>/swap_faces_<S>_<template>)
    steps: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 50
    ema_decay: float = 0.99
    grad_clip: float = 1.0
    mixed_precision: str = "no"            # "bf16" on a GPU
    checkpoint_dir: str = "checkpoints/swap-quick"   # relative paths are relative to the repository root
    checkpoint_every: int = 100
    log_every: int = 25
    seed: int = 0
    # -- sampling defaults --------------------------------------------------------------------------------------
    sample_steps: int = 25
    guidance: float = 2.0
    id_guidance: float = 0.0               # identity-gradient guidance scale (0: off)
    id_views: int = 0                      # identity guidance through K random blurred, shifted views (0: exact)
    id_gradient: str = "x_t"               # identity guidance's gradient: "x_t" through the U-Net, "x0" on x̂_0
    strength: float = 1.0                  # < 1: start from the target noised to strength·T (SDEdit), 1: from noise
    ilvr: int = 0                          # N > 0: keep the target's low-pass at 1/N resolution (ILVR); 0: off

    def __post_init__(self):
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        n = len(self.block_out_channels)
        if n < 2:
            raise ValueError(f"block_out_channels needs at least 2 levels, got {self.block_out_channels}")
        if self.image_size < 32 or self.image_size % 2 ** (n - 1):
            raise ValueError(f"image_size must be >= 32 and divisible by 2^(levels-1) = {2 ** (n - 1)}, "
                             f"got {self.image_size}")
        if not 0 <= self.plain_levels < n:
            raise ValueError(f"plain_levels must be in [0, {n - 1}] (at least one level keeps cross-attention), "
                             f"got {self.plain_levels}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"every width in block_out_channels {self.block_out_channels} must be divisible by "
                             f"norm_num_groups={self.norm_num_groups}")
        if not 0 <= self.p_uncond < 1:
            raise ValueError(f"p_uncond must be in [0, 1), got {self.p_uncond}")
        if self.id_weight < 0 or self.rec_weight < 0:
            raise ValueError(f"id_weight and rec_weight must be >= 0, got {self.id_weight}, {self.rec_weight}")
        if not 0 < self.id_t_max <= self.T:
            raise ValueError(f"id_t_max must be in (0, T={self.T}], got {self.id_t_max}")
        if self.prediction not in ("eps", "v", "x0"):
            raise ValueError(f"prediction must be 'eps', 'v' or 'x0', got {self.prediction!r}")
        if self.reference_skip and not (self.source_pixels and self.prediction == "x0"):
            raise ValueError("reference_skip adds the warped source to the predicted x_0: it needs source_pixels: true "
                             "and prediction: x0")
        if self.template not in ("ffhq", "arcface"):
            raise ValueError(f"template must be 'ffhq' or 'arcface', got {self.template!r}")
        if not 0 < self.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        check_ilvr(self.ilvr, self.image_size)
        if not 0 <= self.p_cross <= 1 or self.cross_after < 0:
            raise ValueError(f"p_cross must be in [0, 1] and cross_after >= 0, got {self.p_cross}, {self.cross_after}")
        if self.warp_jitter < 0 or self.colour_jitter < 0 or not 0 <= self.blur_prob <= 1:
            raise ValueError(f"warp_jitter and colour_jitter must be >= 0 and blur_prob in [0, 1], got "
                             f"{self.warp_jitter}, {self.colour_jitter}, {self.blur_prob}")
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {self.steps}, {self.batch_size}")

    # -- helpers ------------------------------------------------------------------------------------------------
    def model_dict(self) -> dict:
        """The fields a checkpoint must match."""
        d = asdict(self)
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in MODEL_FIELDS}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["block_out_channels"] = list(d["block_out_channels"])
        return d

    def resolved_checkpoint_dir(self) -> Path:
        return resolve_checkpoint_dir(self.checkpoint_dir)

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return resolve_path(self.cache_dir)
        from dfs.faces.identity import cache_dir
        return cache_dir() / f"swap_faces_{self.image_size}_{self.template}"


@dataclass
class SamplerOptions:
    """The diffusion swap's sampler options: the one place they are defined.  ``None`` means "the checkpoint's
    default" (its configuration's ``sample_steps``, ``guidance``, ``id_guidance``, ``strength``, ``ilvr``).  The
    CLI flags of ``dfs swap`` and ``dfs eval`` are generated from these fields (:meth:`add_arguments`)."""

    steps: int | None = field(default=None, metadata={"help": "DDIM steps (default: the checkpoint's, 25)"})
    guidance: float | None = field(default=None, metadata={
        "help": "classifier-free guidance scale s (1: the conditional model; default: the checkpoint's)"})
    id_guidance: float | None = field(default=None, metadata={
        "help": "identity-gradient guidance scale (slow; it optimises the network the metrics use; default 0)"})
    id_views: int | None = field(default=None, metadata={
        "help": "identity guidance judges K random views of the result (blurred, shifted), so it cannot win with "
                "a pattern only the sharp chip shows; 0: the result itself (default: the checkpoint's)"})
    id_gradient: str | None = field(default=None, metadata={
        "choices": ("x_t", "x0"),
        "help": "identity guidance's gradient: x_t through the U-Net (Dhariwal & Nichol), x0 a step on the "
                "predicted image (no U-Net backward pass; default: the checkpoint's)"})
    strength: float | None = field(default=None, metadata={
        "help": "start from the target noised to this fraction of the steps (SDEdit; default 1: from noise)"})
    ilvr: int | None = field(default=None, metadata={
        "help": "keep the target's low-pass at 1/N of the crop size at every step (ILVR; N = 4 or 8 keeps its "
                "coarse layout and light; default 0: off)"})

    # the SwapConfig field holding each option's default
    CONFIG_FIELDS = {"steps": "sample_steps", "guidance": "guidance", "id_guidance": "id_guidance",
                     "id_views": "id_views", "id_gradient": "id_gradient",
                     "strength": "strength", "ilvr": "ilvr"}

    def given(self) -> dict:
        """The options set (not None)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def resolve(self, config: SwapConfig) -> "SamplerOptions":
        """Every None replaced by ``config``'s default, then checked against the model: steps in [1, T], guidance
        scales >= 0, strength in (0, 1], ilvr 0 or a divisor of the crop size."""
        o = replace(self, **{k: getattr(config, c) for k, c in self.CONFIG_FIELDS.items() if getattr(self, k) is None})
        o.steps, o.guidance, o.id_guidance = int(o.steps), float(o.guidance), float(o.id_guidance)
        o.strength, o.ilvr, o.id_views = float(o.strength), int(o.ilvr), int(o.id_views)
        if o.id_views < 0:
            raise ValueError(f"id_views must be >= 0, got {o.id_views}")
        if o.id_gradient not in ("x_t", "x0"):
            raise ValueError(f"id_gradient must be 'x_t' or 'x0', got {o.id_gradient!r}")
        if not 1 <= o.steps <= config.T:
            raise ValueError(f"steps must be in [1, {config.T}], got {o.steps}")
        if o.guidance < 0 or o.id_guidance < 0:
            raise ValueError(f"guidance and id_guidance must be >= 0, got {o.guidance}, {o.id_guidance}")
        if not 0 < o.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {o.strength}")
        check_ilvr(o.ilvr, config.image_size)
        return o

    @classmethod
    def add_arguments(cls, parser, prefix: str = "diffusion: ") -> None:
        """One ``--name`` flag per field (underscores as dashes), typed and documented from the field."""
        for f in fields(cls):
            kind = {"int | None": int, "float | None": float, "str | None": str}[str(f.type)]
            parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None,
                                choices=f.metadata.get("choices"), help=prefix + f.metadata["help"])

    @classmethod
    def from_args(cls, args) -> "SamplerOptions":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    @staticmethod
    def flags(names) -> str:
        return ", ".join("--" + n.replace("_", "-") for n in names)


def check_ilvr(factor: int, image_size: int) -> None:
    """ILVR's factor N: 0 (off) or a divisor of the crop size (the low-pass averages N×N blocks)."""
    if factor < 0 or (factor and image_size % factor):
        raise ValueError(f"ilvr must be 0 (off) or a divisor of the crop size {image_size} (the low-pass averages "
                         f"N×N blocks: 4 or 8 keep the target's coarse layout and light), got {factor}")


def resolve_path(p: str | os.PathLike) -> Path:
    """Absolute paths as they are; relative ones below the repository root (so notebooks and the CLI agree)."""
    from dfs.paths import repo_root
    p = Path(p).expanduser()
    return p if p.is_absolute() else repo_root() / p


def resolve_checkpoint_dir(p: str | os.PathLike) -> Path:
    """A run folder: :func:`resolve_path`, except that in a smoke run (``DFS_SMOKE=1``) relative ones go below the
    smoke run's own folder (:func:`dfs.smoke.run_root`), so that it never resumes from, or overwrites, a real run."""
    p = Path(p).expanduser()
    if smoke.smoke_caps() is not None and not p.is_absolute():
        return smoke.run_root() / p
    return resolve_path(p)


SMOKE_LIMITS = {"steps": "max_train_steps", "hear_steps": "max_train_steps", "batch_size": "max_batch",
                "max_per_identity": "max_per_identity"}


def smoke_capped(d: dict, cls) -> dict:
    """``d`` (settings of ``cls``) with the training length, batch and photos per person capped in a smoke run
    (``DFS_SMOKE=1``, :mod:`dfs.smoke`); ``d`` itself otherwise."""
    caps = smoke.smoke_caps()
    if caps is None:
        return d
    defaults = {f.name: f.default for f in fields(cls)}
    return {**d, **{k: min(d.get(k, defaults[k]), getattr(caps, limit)) for k, limit in SMOKE_LIMITS.items()
                    if k in defaults}}


def preset_path(name: str) -> Path:
    return Path(__file__).parent / "presets" / f"{name}.yaml"


def config_from_dict(d: dict, where: str = "the configuration", cls=None, what: str = "setting"):
    """``cls(**d)`` (default :class:`SwapConfig`) with a clear error naming any unknown ``what``."""
    cls = cls or SwapConfig
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}: unknown {what}(s) {unknown}; known settings are {sorted(known)}")
    return cls(**d)


def load_yaml_config(name_or_path: str | os.PathLike, presets: tuple, preset_file, cls, overrides: dict,
                     model: str = ""):
    """A preset name in ``presets`` (its file ``preset_file(name)``) or a YAML file, with keyword overrides, as
    ``cls`` -- shared by the diffusion swap's and FaceShifter's configurations (``model`` names the latter in
    messages)."""
    import yaml

    what = f"{model} " if model else ""
    s = str(name_or_path)
    path = preset_file(s) if s in presets else Path(s).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no {what}configuration {s!r}: use a preset ({', '.join(presets)}) or a YAML "
                                "file path")
    d = yaml.safe_load(path.read_text()) or {}
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a configuration is a YAML mapping of setting: value")  # noqa: TRY004
    d.update(overrides)
    return config_from_dict(smoke_capped(d, cls), str(path), cls, f"{what}setting")


def load_config(name_or_path: str | os.PathLike = "quick", **overrides) -> SwapConfig:
    """A preset name (``quick``, ``full``) or a YAML file, with keyword overrides."""
    return load_yaml_config(name_or_path, PRESETS, preset_path, SwapConfig, overrides)


def check_compatible(saved: dict, config, where: str) -> None:
    """Raise ValueError when a checkpoint's model settings differ from ``config``'s (a :class:`SwapConfig` or
    FaceShifter's configuration); a field newer than the checkpoint counts as its default value."""
    want, default = config.model_dict(), type(config)().model_dict()
    diff = {k: (saved.get(k, default[k]), want[k]) for k in want if saved.get(k, default[k]) != want[k]}
    if diff:
        what = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{where} was trained for another model ({what}); pass a checkpoint of this configuration "
                         f"or the configuration it was trained with (another checkpoint_dir for a new run)")


# ---------------------------------------------------------------------------------------------------------------
# personalisation (dfs.personalize): its options, the one place they are defined; dfs personalize's flags are
# made from them

MODES = ("tokens", "full")
# dlib's same-person threshold on the Euclidean distance of its raw 128-D descriptors (dlib's
# face_recognition.py example and dnn_face_recognition_ex.cpp: "faces closer than 0.6 are the same person").
# Applied to each photo's median distance to the others (dfs.personalize.check_one_person).  Measured on the 494
# photos of data/lfw_home (dfs.personalize.spread_check_rates of people_descriptors(), 2000 draws, seed 0): 2.6 % of
# same-person pairs lie above 0.6 and 0.5 % of different-person pairs below; sets of 3 (5) photos of one person are
# refused 2.5 % (4.0 %) of the time, sets with one photo of someone else caught 99.6 % (99.8 %) of the time and the
# odd photo named 99.5 % (99.8 %).  0.65 refuses fewer genuine sets (1.0 %, 2.4 %) and catches fewer strangers
# (97.5 %, 98.7 %).
SAME_PERSON_DISTANCE = 0.6


# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PersonalizeOptions:
    """What ``dfs personalize`` trains.  ``lr`` None: 5e-3 for tokens (a few numbers, moved far), 1e-4 for the
    full fine-tune (DreamBooth's regime: a tenth of the swap's own training rate)."""

    mode: str = field(default="full", metadata={"help": "tokens: learn the identity tokens, U-Net frozen; full: "
                                                "fine-tune the U-Net (DreamBooth) (default full)",
                                                "choices": MODES})
    steps: int = field(default=100, metadata={"help": "training steps (default 100)"})
    prior: bool = field(default=True, metadata={"help": "full: leave out the class-prior preservation term "
                                                "(DreamBooth eq. 2, λ = 0)", "flag": "--no-prior"})
    prior_weight: float = field(default=1.0, metadata={"help": "λ of the class-prior term (default 1)"})
    lr: float | None = field(default=None, metadata={"help": "learning rate (default 5e-3 tokens, 1e-4 full)"})
    batch_size: int = field(default=4, metadata={"help": "photos of the person per step (and as many class "
                                                 "images) (default 4)"})
    seed: int = field(default=0, metadata={"help": "training seed (default 0)"})
    max_spread: float = field(default=SAME_PERSON_DISTANCE, metadata={
        "help": "refuse a photo whose median dlib distance to the others exceeds this (default 0.6, dlib's "
                "same-person threshold)"})

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.prior_weight < 0 or (self.lr is not None and self.lr <= 0) or self.max_spread <= 0:
            raise ValueError(f"prior_weight must be >= 0, lr and max_spread > 0; got {self.prior_weight}, "
                             f"{self.lr}, {self.max_spread}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (5e-3 if self.mode == "tokens" else 1e-4)

    @property
    def effective_prior_weight(self) -> float:
        """λ as trained: 0 without the prior and in token mode (the class images' loss does not depend on the
        person's tokens, so it would add nothing to their gradient)."""
        return self.prior_weight if (self.prior and self.mode == "full") else 0.0

    @classmethod
    def add_arguments(cls, parser) -> None:
        """One flag per field (``--no-prior`` for the boolean), typed and documented from the field."""
        for f in fields(cls):
            if f.type == "bool":
                parser.add_argument(f.metadata["flag"], dest=f.name, action="store_false", help=f.metadata["help"])
                continue
            kind = {"str": str, "int": int, "float": float, "float | None": float}[str(f.type)]
            parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default,
                                choices=f.metadata.get("choices"), help=f.metadata["help"])

    @classmethod
    def from_args(cls, args) -> "PersonalizeOptions":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
