"""Personalisation of the diffusion swap, DreamBooth-style: teach the shipped swap one person from a few photos.

    concept = personalize("photos/ann/", "ann", PersonalizeOptions(mode="full"))   # dfs personalize ...
    DiffusionSwap(concept="ann")                                                    # dfs swap --concept ann ...
    study = personalization_study(quick=True)          # notebook 10: the gain and the drift, with intervals

The zero-shot swap reads a person from ONE photo: its pixels (warped onto the target) and its identity embedding e,
mapped to K identity tokens τ(e) that the U-Net reads by cross-attention (:mod:`dfs.swap.diffusion`).  With k = 3-5
photos of the person the model can be taught them (Ruiz et al. 2023, DreamBooth, the thesis draft's reference [3],
l.161 "concepts"); two ways, measured against zero-shot in :func:`personalization_study`:

* **tokens** (``mode="tokens"``, textual inversion's analogue, Gal et al. 2023): learn the person's K tokens c
  (initialised at τ(ē), ē the normalised mean of the photos' embeddings) with every network weight frozen; the
  U-Net stays bit-identical, so nobody else's swap can change;
* **full** (``mode="full"``, DreamBooth): fine-tune the U-Net with the person's tokens fixed at c = τ(ē) (the
  "unique identifier" of DreamBooth: a condition only this person has), with the class-prior preservation loss,
  DreamBooth's eq. 2:

      L = E_{x,c,ε,t} [ w_t ‖x̂_θ(α_t x + σ_t ε, c) − x‖² ]  +  λ E_{x_pr,c_pr,ε',t'} [ w_t' ‖x̂_θ(α_t' x_pr + σ_t' ε', c_pr) − x_pr‖² ]

  The first term is the swap's own loss (:meth:`dfs.swap.diffusion.SwapDiffusion.forward`: self-reconstruction of
  one of the person's photos from another one's warp and the tokens c; the model is an x_0-predictor, so w_t = 1,
  plus the swap's identity-loss term) on a batch of the person's photos; the second the same loss on a second
  batch of **class images** x_pr with their own conditions c_pr = τ(e_pr).  DreamBooth samples its class images
  from the frozen model ("a photo of a dog"); here real photos of the class exist -- the training people of the
  swap (the ``held_out``/``split_seed`` split's training side, :func:`dfs.swap.data.prepare_training_data`) -- and
  are used instead (replay of the original objective).  ``--no-prior`` drops the second term (λ = 0): the
  fine-tune then drifts, which the study measures on everyone else's swaps.

Photos are checked before anything is trained or written: at least 2 usable photos (:func:`read_photos`), and
one person (:func:`check_one_person`: dlib's 0.6 same-person distance on its raw descriptors).  Training goes
through the one trainer, :class:`dfs.train.Trainer`.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from dfs.faces.detect import FaceAnalyzer, FaceNotFoundError
from dfs.faces.identity_chips import FaceEmbedder, identity_encoder
from dfs.faces.images import BadImageError, is_image_file, load_image
from dfs.swap.concept import Concept, save_concept, weights_sha256
from dfs.swap.config import MODES, SAME_PERSON_DISTANCE, PersonalizeOptions
from dfs.swap.data import SwapData, prepare_training_data, to_unit
from dfs.swap.diffusion import DiffusionSwap, SwapDiffusion, default_checkpoint, load_swap_model
from dfs.swap.pipeline import SwapPipeline
from dfs.train import Trainer, TrainConfig
from dfs.labels import lbl
from dfs.smoke import cap

# ---------------------------------------------------------------------------------------------------------------
# the photos: at least two usable, one person


@dataclass
class Photos:
    aligned: list                    # AlignedFace per usable photo
    descriptors: np.ndarray          # (k, 128) dlib's raw descriptors
    embeddings: np.ndarray           # (k, 128) unit vectors (the swap's e)
    used: list = field(default_factory=list)       # [{"file", "faces_found"}]
    skipped: list = field(default_factory=list)    # [{"file", "reason"}]


def dlib_descriptors(items) -> np.ndarray:
    """dlib's raw descriptors (not normalised) of (photo, face) items: the vectors its 0.6 threshold is for."""
    embedder = FaceEmbedder(identity_encoder("cpu"))
    chips = np.stack([embedder.crop(image, face) for image, face in items])
    with torch.no_grad():
        return embedder.encoder.descriptor(torch.from_numpy(chips).permute(0, 3, 1, 2)).double().numpy()


def read_photos(folder: str | os.PathLike, pipeline: SwapPipeline) -> Photos:
    """Detect and align every image in ``folder`` (the largest face of a photo with several); refuse fewer than 2
    usable photos with a one-line error naming every unusable file and why."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--photos {folder}: no such folder; give a folder holding 3-5 photos of the person")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    aligned, used, skipped = [], [], []
    for f in files:
        try:
            image = load_image(f)
            faces = pipeline.analyzer.detect(image, str(f))
            if not faces:
                raise FaceNotFoundError("no face found")
            aligned.append(pipeline.align(image, name=str(f), face=faces[0]))
            used.append({"file": f.name, "faces_found": len(faces)})
        except (FaceNotFoundError, BadImageError) as e:
            reason = "no face found" if isinstance(e, FaceNotFoundError) else f"unreadable ({str(e)[:80]})"
            skipped.append({"file": f.name, "reason": reason})
    if len(aligned) < 2:
        problems = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped) or "no image files"
        raise ValueError(f"--photos {folder}: {len(aligned)} usable photo(s) of the person, personalisation needs at "
                         f"least 2 (3-5 is better) ({problems}); add photos in which the face is visible")
    raw = dlib_descriptors([(a.image, a.face) for a in aligned])
    return Photos(aligned, raw, raw / np.linalg.norm(raw, axis=1, keepdims=True), used, skipped)


def check_one_person(descriptors: np.ndarray, names: list[str], max_spread: float = SAME_PERSON_DISTANCE,
                     where: str = "the photos") -> np.ndarray:
    """Each photo's median dlib distance to the other photos (returned); a ValueError naming the odd photo when
    the largest exceeds ``max_spread`` (dlib's same-person threshold 0.6 by default: the median of the distances
    to the others is that of a photo to the people in most of them, so one stranger among 3-5 stands out while a
    genuine outlier photo, one bad distance among several, does not)."""
    d = np.linalg.norm(descriptors[:, None] - descriptors[None], axis=-1)
    k = len(d)
    med = np.array([np.median(np.delete(d[i], i)) for i in range(k)])
    worst = int(np.argmax(med))
    if med[worst] > max_spread:
        if k == 2:
            raise ValueError(f"{where}: {names[0]} and {names[1]} are {d[0, 1]:.2f} apart in dlib's identity space "
                             f"(> {max_spread}, dlib's same-person threshold): they look like two people; use photos "
                             "of one person (3-5)")
        others = ", ".join(f"{n} {m:.2f}" for i, (n, m) in enumerate(zip(names, med)) if i != worst)
        raise ValueError(f"{where}: {names[worst]} looks like another person (median dlib distance {med[worst]:.2f} "
                         f"to the other photos > {max_spread}, dlib's same-person threshold; the others: {others}); "
                         f"remove it (or raise --max-spread if it is the same person)")
    return med


def people_descriptors(data=None, max_per_identity: int | None = None) -> dict[str, np.ndarray]:
    """dlib's raw descriptors of every photo of ``data`` (default: DFS_DATA or data/), by person (largest face;
    photos without one left out): what :func:`spread_check_rates` measures the threshold on."""
    from dfs.data.faces import load_faces

    analyzer, out = FaceAnalyzer(), {}
    for person, paths in load_faces(data).by_identity().items():
        items = []
        for p in paths[:max_per_identity]:
            try:
                image = load_image(p)
                items.append((image, analyzer.largest(image, name=str(p))))
            except (FaceNotFoundError, BadImageError):
                pass
        if items:
            out[person] = dlib_descriptors(items)
    return out


def spread_check_rates(descriptors: dict[str, np.ndarray], k: int, max_spread: float = SAME_PERSON_DISTANCE,
                       trials: int = 2000, seed: int = 0) -> dict:
    """How :func:`check_one_person` behaves at ``max_spread`` on real people: over ``trials`` draws of k photos of
    one person (among those with >= k), the fraction refused ("false_refusal"); the same sets with the last photo
    replaced by one of another person, the fraction refused ("caught") and refused naming that photo
    ("named_right"); and the pairwise rates behind dlib's convention (same-person pairs above, different-person
    pairs below the threshold)."""
    rng = np.random.default_rng(seed)
    people = sorted(descriptors)
    able = [p for p in people if len(descriptors[p]) >= k]
    if not able or len(people) < 2:
        raise ValueError(f"need a person with >= {k} photos and at least 2 people")

    def verdict(x):
        try:
            check_one_person(x, [str(i) for i in range(len(x))], max_spread)
            return None
        except ValueError as e:
            return str(e)

    refused = caught = named = 0
    for _ in range(trials):
        p = able[rng.integers(len(able))]
        x = descriptors[p][rng.choice(len(descriptors[p]), k, replace=False)]
        refused += verdict(x) is not None
        q = people[rng.integers(len(people) - 1)]
        q = q if q != p else people[-1]
        y = x.copy()
        y[-1] = descriptors[q][rng.integers(len(descriptors[q]))]
        v = verdict(y)
        caught += v is not None
        named += v is not None and v.startswith(f"the photos: {k - 1} looks like")
    every = np.concatenate([descriptors[p] for p in people])
    who = np.concatenate([[p] * len(descriptors[p]) for p in people])
    d = np.linalg.norm(every[:, None] - every[None], axis=-1)
    upper = np.triu(np.ones_like(d, dtype=bool), 1)
    same = who[:, None] == who[None]
    return {"k": k, "max_spread": max_spread, "trials": trials, "false_refusal": refused / trials,
            "caught": caught / trials, "named_right": named / trials,
            "same_pairs_above": float((d[upper & same] > max_spread).mean()),
            "different_pairs_below": float((d[upper & ~same] < max_spread).mean())}


# ---------------------------------------------------------------------------------------------------------------
# the model being trained and DreamBooth's loss


class ConceptModel(nn.Module):
    """The swap model with one person's identity tokens c (K, token_dim) as a parameter; ``mode`` says what
    trains: "tokens" c alone (every weight of ``swap`` frozen), "full" the U-Net with c fixed."""

    def __init__(self, swap: SwapDiffusion, tokens: torch.Tensor, mode: str, prior_weight: float):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.swap, self.mode, self.prior_weight = swap, mode, float(prior_weight)
        self.tokens = nn.Parameter(tokens.detach().clone().float())
        swap.requires_grad_(False)
        if mode == "full":
            swap.unet.requires_grad_(True)
        self.tokens.requires_grad_(mode == "tokens")

    def forward(self, instance, prior=()) -> dict:
        """DreamBooth's eq. 2 (module docstring) with the swap's own loss in each bracket: the person's batch
        ``instance`` with the tokens c (no condition dropout: c is what is taught), plus λ times the class batch
        ``prior`` with its own τ(e_pr) (and the swap's usual dropout)."""
        B = instance[0].shape[0]
        inst = self.swap(*instance, tokens=self.tokens[None].expand(B, -1, -1), p_uncond=0.0)
        out = {"loss": inst["loss"], "instance_loss": inst["loss"], "instance_mse": inst["mse"]}
        if len(prior) and self.prior_weight > 0:
            pr = self.swap(*prior)
            out.update(loss=inst["loss"] + self.prior_weight * pr["loss"], prior_loss=pr["loss"],
                       prior_mse=pr["mse"])
        return out


def dreambooth_loss(model, batch, step: int):
    """The Trainer's loss function: ``model(instance, prior)`` (:meth:`ConceptModel.forward`, DreamBooth eq. 2)."""
    return model(*batch)


class ConceptData:
    """The Trainer's data: each step a batch of the person's pairs and, with a prior, one of the class's."""

    def __init__(self, instance: SwapData, prior: SwapData | None = None):
        self.instance, self.prior = instance, prior

    def __call__(self, step: int, generator: torch.Generator):
        inst = self.instance(step, generator)
        return (inst, self.prior(step, generator) if self.prior is not None else ())


def instance_data(photos: Photos, name: str, config, batch_size: int) -> SwapData:
    """The person's photos as the swap's training pairs (a photo rebuilt from another one's warp)."""
    a = photos.aligned
    return SwapData(to_unit(np.stack([x.crop for x in a])), torch.from_numpy(np.stack([x.mask for x in a]))[:, None].float(),
                    torch.from_numpy(np.stack([x.landmarks68 for x in a])).float(),
                    torch.from_numpy(photos.embeddings).float(), [name] * len(a), batch_size, flip=config.flip,
                    source_pixels=config.source_pixels,
                    augment={"warp_jitter": config.warp_jitter, "colour_jitter": config.colour_jitter,
                             "blur_prob": config.blur_prob})


def mean_tokens(model: SwapDiffusion, embeddings: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(τ(ē), ē): the tokens of the normalised mean identity vector of the photos, and that vector."""
    e = torch.from_numpy(np.asarray(embeddings, np.float64)).float().mean(0)
    e = e / e.norm()
    with torch.no_grad():
        return model.tokens(e[None])[0].detach().clone(), e


def train_concept(base: SwapDiffusion, photos: Photos, name: str, options: PersonalizeOptions,
                  prior: SwapData | None = None, base_info: dict | None = None, progress: bool = False,
                  wandb_project: str | None = None) -> Concept:
    """Train a concept of ``photos`` on (a copy of) ``base`` through :class:`dfs.train.Trainer`; ``prior``: the
    class images (needed for mode "full" with the prior).  ``base`` is left unchanged."""
    o = options
    lam = o.effective_prior_weight
    if lam > 0 and prior is None:
        raise ValueError("the class-prior term needs the class images (prior=SwapData of the training people)")
    swap = copy.deepcopy(base).train()
    init, e_mean = mean_tokens(swap, photos.embeddings)
    model = ConceptModel(swap, init, o.mode, lam)
    data = ConceptData(instance_data(photos, name, swap.config, o.batch_size), prior if lam > 0 else None)
    t0 = time.perf_counter()
    tcfg = TrainConfig(steps=o.steps, batch_size=o.batch_size, lr=o.learning_rate, warmup_steps=0, grad_clip=1.0,
                       ema_decay=None, seed=o.seed, checkpoint_dir=None, log_every=max(1, min(25, o.steps // 10)),
                       progress=progress, wandb_project=wandb_project)
    trainer = Trainer(model, dreambooth_loss, data, tcfg)
    trainer.fit()
    tuned = trainer.raw_model
    delta = {}
    if o.mode == "full":
        base_p = dict(base.unet.named_parameters())
        delta = {k: (p.detach().cpu() - base_p[k].detach().cpu()).to(torch.float16)
                 for k, p in tuned.swap.unet.named_parameters()}
    info = {"base": base_info or {"checkpoint": "in-memory model", "weights_sha256": weights_sha256(base)},
            "mode": o.mode, "options": asdict(o), "lr": o.learning_rate, "prior_weight": lam,
            "prior": ({"class images": "the swap's training people (held_out/split_seed split, training side)",
                       "photos": len(prior), "people": prior.people} if lam > 0 else None),
            "photos": photos.used, "skipped": photos.skipped, "steps": trainer.step,
            "losses": trainer.history, "train_seconds": round(time.perf_counter() - t0, 2)}
    crops = np.stack([a.crop for a in photos.aligned])
    lms = np.stack([a.landmarks68 for a in photos.aligned]).astype(np.float32)
    return Concept(name, o.mode, tuned.tokens.detach().cpu().clone(), e_mean, crops, lms, delta, info)


def personalize(photos: str | os.PathLike, name: str, options: PersonalizeOptions | None = None,
                checkpoint: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                progress: bool = True, wandb_project: str | None = None) -> tuple[Concept, Path]:
    """``dfs personalize``: check the photos, train, write ``<out>/<name>.safetensors`` and ``.json`` (default
    ``concepts/``).  Every check runs before training; nothing is written on an error."""
    import re

    o = options or PersonalizeOptions()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"--name {name!r}: use letters, digits, '_', '-' or '.' (it becomes the file name)")
    model, cfg, path = load_swap_model(checkpoint or default_checkpoint())
    pipe = SwapPipeline(DiffusionSwap(model=model), analyzer=FaceAnalyzer())
    found = read_photos(photos, pipe)
    check_one_person(found.descriptors, [u["file"] for u in found.used], o.max_spread, f"--photos {photos}")
    prior = None
    if o.effective_prior_weight > 0:
        from dataclasses import replace
        prior = prepare_training_data(replace(cfg, batch_size=o.batch_size), progress=progress)
    base_info = {"checkpoint": str(path), "weights_sha256": weights_sha256(model),
                 "step": _checkpoint_step(path)}
    concept = train_concept(model, found, name, o, prior, base_info, progress, wandb_project)
    concept.info["photos_folder"] = str(Path(photos).resolve())
    return concept, save_concept(concept, out)


def _checkpoint_step(path: Path) -> int | None:
    import json
    try:
        return int(json.loads((Path(path) / "state.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# the study: gain on held-out people as sources, drift on everyone else (notebook 10)

VARIANTS = ("zero-shot, 1 photo", "zero-shot, mean of k", "tokens", "fine-tune + prior", "fine-tune, no prior")
# quick: 137.5 s of CPU time (user + system) on one thread for the whole study (model, detection, 6 trainings,
# 84 swaps judged), measured with /usr/bin/time -v; full: not run on this CPU (an estimate of ~1.5 h on one thread)
QUICK = {"people": 1, "steps": 10, "batch_size": 2, "pairs": 6, "drift_pairs": 6}
FULL = {"people": 4, "steps": 150, "batch_size": 4, "pairs": 10, "drift_pairs": 20}


@dataclass
class StudyResult:
    rows: list                       # one dict per (part, shots, variant): means, intervals, paired differences
    table: str                       # markdown
    settings: dict
    concepts: list                   # per trained concept: person, shots, mode, prior weight, steps, losses, size
    examples: dict = field(default_factory=dict, repr=False)   # for personalization_grid
    seconds: float = 0.0


def _face_crop(image: np.ndarray, face, size: int = 96) -> np.ndarray:
    """The face region of a photo (FFHQ-aligned at ``size``): what the grid shows."""
    from dfs.faces.align import alignment_matrix, warp_image
    return warp_image(image, alignment_matrix(face.landmarks5, "ffhq", size), size)


def personalization_study(shots=(3, 5), people=None, steps: int | None = None, quick: bool = True,
                          pairs: int | None = None, drift_pairs: int | None = None, batch_size: int | None = None,
                          checkpoint=None, data=None, held_out: float | int = 0.2, split_seed: int = 0,
                          max_per_identity: int = 10, seed: int = 0, prior_weight: float = 1.0,
                          n_boot: int = 2000, progress: bool = False) -> StudyResult:
    """Personalise the swap to held-out people and measure, against the zero-shot swap, the gain when that person
    is the source and the drift on everyone else's swaps (``QUICK`` / ``FULL`` give the defaults of what is None).

    Protocol (all through :class:`dfs.metrics.SwapJudge`, the judge of ``dfs eval``, on the held-out side of the
    ``held_out``/``split_seed`` split of ``data``: people the model never saw; at most ``max_per_identity`` photos
    each, photos without a face left out):

    * each studied person P (``people``: a count, drawn with ``seed`` among those with >= max(shots) + 2 photos,
      or a list of names) has their photos put in a seeded random order: the first k (k in ``shots``, nested: the
      3 are among the 5) are the **training photos**, the photos after the first max(shots) are **query photos**,
      never trained on;
    * the retrieval gallery is every held-out photo except the studied people's first max(shots) (so P is
      represented only by photos the concept never saw; a triple's own query and target photo are left out too);
    * **identity pairs**: ``pairs`` per person, (query photo q of P, target photo of another held-out person),
      queries cycled; every row swaps P onto the same targets with the same seeds and the same pixel reference (P's
      first training photo, warped onto the target), and differs only in the identity tokens (and U-Net):
      "zero-shot, 1 photo" τ(e) of that photo (what ``dfs swap --source`` does); "zero-shot, mean of k" τ(ē) of the
      k photos (no training: the starting point of both trainings); "tokens"; "fine-tune + prior" (λ =
      ``prior_weight``); "fine-tune, no prior".  The judge compares the result with q: ID cosine to q, and ID
      top-1 (P ranked first among the gallery's people);
    * **drift pairs**: ``drift_pairs`` per person, (source, target) photos of two other held-out people (neither P),
      swapped with the base model and with each fine-tuned one: ID top-1, ID cosine to the source and pose error,
      before and after.  The token concept leaves the U-Net bit-identical (tested), so its drift is zero by
      construction and not sampled;
    * every metric has a 95 % percentile-bootstrap interval over the pairs (pooled over people), and every row
      its paired difference to "zero-shot, 1 photo" (identity) or to the base model (drift) on the same pairs.
    """
    from dataclasses import replace

    from dfs.data.faces import load_faces
    from dfs.metrics import SwapJudge, Triple, intervals, paired_differences, summarise

    t_start = time.perf_counter()
    preset = QUICK if quick else FULL
    steps = steps or preset["steps"]
    pairs = cap(pairs or preset["pairs"], "max_eval_pairs")            # dfs reproduce --smoke: toy length
    drift_pairs = cap(drift_pairs or preset["drift_pairs"], "max_eval_pairs")
    batch_size = batch_size or preset["batch_size"]
    people = cap(preset["people"], "max_seeds") if people is None else people
    shots = tuple(sorted(int(k) for k in shots))
    if not shots or shots[0] < 2:
        raise ValueError(f"shots must be photo counts >= 2, got {shots}")
    rng = np.random.default_rng(seed)

    base_method = DiffusionSwap(checkpoint, batch_size=8)
    base = base_method.model
    base_info = {"checkpoint": base_method.checkpoint, "weights_sha256": weights_sha256(base)}
    analyzer = FaceAnalyzer()
    pipe = SwapPipeline(base_method, analyzer=analyzer)

    # held-out photos, detected once
    _, held = load_faces(data).split(held_out, split_seed)
    detected: dict[str, tuple] = {}
    by_person: dict[str, list[str]] = {}
    for person, paths in held.by_identity().items():
        for p in paths[:max_per_identity]:
            try:
                image = load_image(p)
                detected[str(p)] = (person, image, analyzer.largest(image, name=str(p)))
                by_person.setdefault(person, []).append(str(p))
            except (FaceNotFoundError, BadImageError):
                pass
    need = shots[-1] + 2
    eligible = sorted(p for p, ks in by_person.items() if len(ks) >= need)
    if isinstance(people, int):
        if people > len(eligible):
            raise ValueError(f"asked for {people} people, {len(eligible)} held-out people have >= {need} photos")
        chosen = [eligible[i] for i in sorted(rng.choice(len(eligible), people, replace=False))]
    else:
        chosen = list(people)
        missing = [p for p in chosen if p not in eligible]
        if missing:
            raise ValueError(f"{missing}: not held-out people with >= {need} photos; choose among {eligible}")
    order = {p: [by_person[p][i] for i in rng.permutation(len(by_person[p]))] for p in chosen}
    trained_on = {k for p in chosen for k in order[p][:shots[-1]]}

    judge = SwapJudge(analyzer=analyzer)
    gallery_keys = sorted(k for k in detected if k not in trained_on)
    judge.build_gallery([(k, detected[k][0], detected[k][1], detected[k][2]) for k in gallery_keys])
    aligned: dict[str, object] = {}

    def align(key):
        if key not in aligned:
            _, image, face = detected[key]
            aligned[key] = pipe.align(image, name=key, face=face)
        return aligned[key]

    prior = None
    if prior_weight > 0:
        prior = prepare_training_data(replace(base.config, batch_size=batch_size, data=data, held_out=held_out,
                                              split_seed=split_seed), progress=progress)

    scores: dict[tuple, list] = {}            # (part, shots, variant) -> TripleScores over pairs (people pooled)
    concepts_info, examples = [], {}
    sampler = base_method.sampler

    def run(method, sources, targets, judged):
        """Swap and judge: ``judged`` are the (source key, target key, identity) triples the judge reads."""
        res = SwapPipeline(method, analyzer=analyzer).run(sources, targets, seed=seed)
        out = []
        for r, (sk, tk, ident) in zip(res, judged):
            _, s_img, s_face = detected[sk]
            t_person, t_img, t_face = detected[tk]
            out.append(judge.triple(Triple(s_img, t_img, r.image, s_face, t_face, ident, sk, tk, t_person)))
        return out, [_face_crop(r.image, detected[tk][2]) for r, (_, tk, _) in zip(res, judged)]

    for person in chosen:
        photos_p = order[person]
        queries = photos_p[shots[-1]:]
        others = [k for k in detected if detected[k][0] != person]
        id_pairs = [(queries[i % len(queries)], others[rng.integers(len(others))]) for i in range(pairs)]
        drift = []
        while len(drift) < drift_pairs:
            s, t = others[rng.integers(len(others))], others[rng.integers(len(others))]
            if detected[s][0] != detected[t][0]:
                drift.append((s, t))
        ref = align(photos_p[0])
        id_targets = [align(t) for _, t in id_pairs]
        id_judged = [(q, t, person) for q, t in id_pairs]
        d_sources, d_targets = [align(s) for s, _ in drift], [align(t) for _, t in drift]
        d_judged = [(s, t, detected[s][0]) for s, t in drift]

        zs, zs_img = run(base_method, [ref] * pairs, id_targets, id_judged)
        base_drift, base_drift_img = run(base_method, d_sources, d_targets, d_judged)
        ex = {"targets": [_face_crop(detected[t][1], detected[t][2]) for _, t in id_pairs],
              "queries": [_face_crop(detected[q][1], detected[q][2]) for q, _ in id_pairs],
              "reference": _face_crop(ref.image, ref.face), "zero-shot, 1 photo": zs_img,
              "drift_sources": [_face_crop(detected[s][1], detected[s][2]) for s, _ in drift],
              "drift_targets": [_face_crop(detected[t][1], detected[t][2]) for _, t in drift],
              "drift base": base_drift_img}
        for k in shots:
            scores.setdefault(("identity", k, VARIANTS[0]), []).extend(zs)
            scores.setdefault(("drift", k, "base"), []).extend(base_drift)
            train_keys = photos_p[:k]
            a = [align(x) for x in train_keys]
            raw = dlib_descriptors([(x.image, x.face) for x in a])
            photos = Photos(a, raw, raw / np.linalg.norm(raw, axis=1, keepdims=True),
                            [{"file": x} for x in train_keys])
            tok, e_mean = mean_tokens(base, photos.embeddings)
            variants = {VARIANTS[1]: Concept(person, "tokens", tok, e_mean, np.stack([x.crop for x in a]),
                                             np.stack([x.landmarks68 for x in a]), {}, {"base": base_info})}
            for variant, mode, lam in ((VARIANTS[2], "tokens", 0.0), (VARIANTS[3], "full", prior_weight),
                                       (VARIANTS[4], "full", 0.0)):
                o = PersonalizeOptions(mode=mode, steps=steps, prior=lam > 0, prior_weight=lam or 1.0,
                                       batch_size=batch_size, seed=seed)
                c = train_concept(base, photos, person, o, prior, base_info, progress)
                variants[variant] = c
                size = sum(v.numel() * v.element_size() for v in c.tensors().values())
                concepts_info.append({"person": person, "shots": k, "variant": variant, "mode": mode,
                                      "prior_weight": c.info["prior_weight"], "steps": c.info["steps"],
                                      "lr": c.info["lr"], "train_seconds": c.info["train_seconds"],
                                      "tensor_bytes": size, "first_loss": c.info["losses"][0]["loss"],
                                      "last_loss": c.info["losses"][-1]["loss"]})
            for variant, c in variants.items():
                method = DiffusionSwap(model=base, concept=c, sampler=sampler)
                sc, img = run(method, [ref] * pairs, id_targets, id_judged)
                scores.setdefault(("identity", k, variant), []).extend(sc)
                if k == shots[-1] and person == chosen[0]:
                    ex[variant] = img
                if c.unet_delta:
                    sc, img = run(method, d_sources, d_targets, d_judged)
                    scores.setdefault(("drift", k, variant), []).extend(sc)
                    if k == shots[-1] and person == chosen[0]:
                        ex["drift " + variant] = img
        if person == chosen[0]:
            examples = {**ex, "person": person, "shots": shots[-1]}

    rows = []
    for (part, k, variant), sc in scores.items():
        ref_key = (part, k, VARIANTS[0] if part == "identity" else "base")
        summ, ci = summarise(sc), intervals(sc, n_boot=n_boot, seed=seed)
        row = {"part": part, "shots": k, "variant": variant, "n": len(sc)}
        for m in ("id_top1", "id_cos_source", "pose_error", "expression_error"):
            row[m] = summ.get(m)
            row[m + "_ci"] = ci.get(m)
        if ref_key != (part, k, variant):
            d = paired_differences(sc, scores[ref_key], n_boot=n_boot, seed=seed)
            for m in ("id_top1", "id_cos_source", "pose_error"):
                if m in d:
                    row["diff_" + m] = d[m]
        rows.append(row)
    settings = {"shots": list(shots), "people": chosen, "steps": steps, "batch_size": batch_size,
                "pairs_per_person": pairs, "drift_pairs_per_person": drift_pairs, "prior_weight": prior_weight,
                "held_out": held_out, "split_seed": split_seed, "max_per_identity": max_per_identity, "seed": seed,
                "quick": quick, "base": base_info, "sampler": asdict(sampler), "gallery_photos": len(gallery_keys),
                "gallery_people": judge.gallery.people}
    result = StudyResult(rows, "", settings, concepts_info, examples, time.perf_counter() - t_start)
    result.table = study_table(result)
    return result


def study_table(result: StudyResult) -> str:
    """The study's rows as markdown: mean [95 % interval] and the paired difference to the reference row."""
    def iv(r, m, f):
        v, ci = r.get(m), r.get(m + "_ci")
        return "–" if v is None else (f.format(v) + (f" [{f.format(ci[0])}, {f.format(ci[1])}]" if ci else ""))

    def dd(r, m, f):
        d = r.get("diff_" + m)
        return "–" if d is None else f"{f.format(d['mean'])} [{f.format(d['low'])}, {f.format(d['high'])}]"

    lines = ["| part | k | variant | n | ID top-1 ↑ | ID cos ↑ | pose error (°) | Δ ID top-1 | Δ ID cos | Δ pose |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(result.rows, key=lambda r: (r["part"] != "identity", r["shots"])):
        lines.append(f"| {r['part']} | {r['shots']} | {r['variant']} | {r['n']} | {iv(r, 'id_top1', '{:.0%}')} | "
                     f"{iv(r, 'id_cos_source', '{:.3f}')} | {iv(r, 'pose_error', '{:.2f}')} | "
                     f"{dd(r, 'id_top1', '{:+.0%}')} | {dd(r, 'id_cos_source', '{:+.3f}')} | "
                     f"{dd(r, 'pose_error', '{:+.2f}')} |")
    s = result.settings
    return "\n".join(lines) + (
        f"\n\nIdentity rows: the person as the source, judged against their photos never trained on (ID cos to the "
        f"query photo; top-1 among {len(s['gallery_people'])} held-out people); Δ: paired difference to "
        f"\"zero-shot, 1 photo\". Drift rows: other people's swaps; Δ to the base model. People: "
        f"{', '.join(s['people'])}; {s['steps']} steps, batch {s['batch_size']}; 95 % bootstrap intervals over "
        f"pairs.\n")


def personalization_grid(result: StudyResult, n: int = 4):
    """The study's first person at max(shots): each row a target; columns the target, a photo of the person never
    trained on, the pixel reference, and the swaps of every variant; below, other people's swaps before and after
    each fine-tune (the drift)."""
    import matplotlib.pyplot as plt

    ex = result.examples
    n = min(n, len(ex["targets"]))
    id_cols = ["targets", "queries", "reference", *VARIANTS]
    drift_cols = ["drift_sources", "drift_targets", "drift base", "drift " + VARIANTS[3], "drift " + VARIANTS[4]]
    n_drift = min(n, len(ex.get("drift_targets", [])))
    rows, cols = n + n_drift, len(id_cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.35 * cols, 1.45 * rows), squeeze=False)
    titles = {"targets": lbl("target"), "queries": lbl("{person}\n(not trained on)", person=ex["person"]),
              "reference": lbl("pixel reference"), "drift_sources": lbl("other source"),
              "drift_targets": lbl("other target"), "drift base": lbl("base model"),
              "drift " + VARIANTS[3]: lbl("after\nfine-tune + prior"),
              "drift " + VARIANTS[4]: lbl("after\nfine-tune, no prior")}
    for i in range(rows):
        names = id_cols if i < n else drift_cols
        j = i if i < n else i - n
        for c in range(cols):
            ax = axes[i, c]
            ax.axis("off")
            if c >= len(names) or names[c] not in ex:
                continue
            img = ex[names[c]] if names[c] == "reference" else ex[names[c]][j]
            ax.imshow(img)
            if j == 0:
                ax.set_title(titles.get(names[c], lbl(names[c]).replace(", ", ",\n")), fontsize=7)
    fig.suptitle(lbl("Personalisation with k = {k} photos: identity swaps (top), other people's swaps (bottom)",
                     k=ex["shots"]), fontsize=9)
    fig.tight_layout()
    return fig
