"""Notebook 04's experiments on 32 × 32 digits: the autoencoder rate–distortion–meaning study (KL and VQ,
f ∈ {2, 4, 8, 16}), pixel vs latent diffusion, and class-conditional latent diffusion — one recipe, trained
from scratch or loaded from the small shipped weights that the same code made.

    recipe = LatentRecipe()                                    # the quick recipe (what dfs/weights/latent-digits holds)
    data = digits_split(recipe)                                # 1500 training / 297 test digits at 32 × 32
    models = load_shipped(recipe)                              # or train_all(recipe, data): the same models
    ae = models["ae-kl-f8"]; ldm = models["cond"]

Why shipped weights: on a 2-core CPU the nine autoencoders and three diffusion models need ~15 CPU-minutes to
reach readable samples, far beyond the notebook's quick budget. ``python -m dfs.latent_study --out
dfs/weights/latent-digits`` retrains them all with this module's code and writes them with the recipe and its
hash (:func:`recipe_hash`: the recipe's numbers and the source code of every function that trains or builds the
models). :func:`load_shipped` refuses weights whose hash differs from the code's: change the recipe or the
training code and a test says "retrain and re-ship".
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import diffusion, latent, nets, train
from .data import digits
from .figures import git_commit
from .smoke import smoke_caps

SHIPPED_DIR = Path(__file__).resolve().parent / "weights" / "latent-digits"
SHIP_COMMAND = "python -m dfs.latent_study --out dfs/weights/latent-digits"


@dataclass(frozen=True)
class LatentRecipe:
    """Every number that decides the trained models (one source of truth; hashed into the shipped weights)."""
    size: int = 32                      # digits resized to size × size
    n_train: int = 1500                 # of the 1797 digits, after a seeded shuffle; the rest is the test set
    split_seed: int = 0
    factors: tuple = (2, 4, 8, 16)      # autoencoder downsampling factors f
    ae_preset: str = "tiny"
    latent_channels: int = 4
    vq_codes: int = 256
    ae_steps: int = 400
    ae_batch: int = 32
    ae_lr: float = 2e-3
    no_remedy_f: int = 4                # one VQ autoencoder is also trained with the plain codebook loss
    diffusion_f: int = 8                # the KL autoencoder under both latent diffusion models (4 × 4 × 4 latents)
    unet_preset: str = "tiny"
    T: int = 1000
    uncond_batch: int = 32              # pixel and latent unconditional models: the same batch, ...
    pixel_steps: int = 40               # ... and about the same training compute on a CPU (a pixel step at 32 × 32
    latent_steps: int = 3000            #     costs ~50 latent steps at 4 × 4): notebook 04 measures both
    cond_steps: int = 3000
    cond_batch: int = 32
    diff_lr: float = 1e-3
    diff_ema: float = 0.999
    p_uncond: float = 0.1
    n_tokens: int = 4
    token_dim: int = 32
    seed: int = 0

    def __post_init__(self):
        bad = [f for f in self.factors if self.size % f]
        if bad or self.diffusion_f not in self.factors or self.no_remedy_f not in self.factors:
            raise ValueError(f"every f must divide size={self.size} (not {bad}) and diffusion_f={self.diffusion_f}, "
                             f"no_remedy_f={self.no_remedy_f} must be among factors={self.factors}")
        if not 0 < self.n_train < 1797:
            raise ValueError(f"n_train must leave test digits: 0 < n_train < 1797, got {self.n_train}")


QUICK = LatentRecipe()
FULL = replace(QUICK, ae_preset="small", ae_steps=3000, ae_batch=64, uncond_batch=128, pixel_steps=8000,
               latent_steps=8000, cond_steps=8000, cond_batch=128)


def recipe(quick: bool, **overrides) -> LatentRecipe:
    """The quick recipe (the shipped weights) or the full one (a GPU: wider autoencoders, more steps).  With
    ``DFS_SMOKE=1`` (:mod:`dfs.smoke`) every batch is capped (the trainer caps the steps), and the test set to
    4 × ``max_data_items`` digits (the rest of the 1797 go to training, which the trainer caps anyway)."""
    r = replace(QUICK if quick else FULL, **overrides)
    caps = smoke_caps()
    if caps is not None:
        r = replace(r, ae_batch=min(r.ae_batch, caps.max_batch), uncond_batch=min(r.uncond_batch, caps.max_batch),
                    cond_batch=min(r.cond_batch, caps.max_batch), n_train=max(r.n_train, 1797 - 4 * caps.max_data_items))
    return r


def digits_split(r: LatentRecipe) -> dict:
    """{x_train, y_train, x_test, y_test}: the 1797 digits at r.size px, shuffled with r.split_seed and split
    after r.n_train (a random split: the file's last digits are by other writers and harder)."""
    x, y = digits.digits_images(r.size)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(r.split_seed))
    x, y = x[perm], y[perm]
    n = r.n_train
    return {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:]}


# ----------------------------------------------------------------------------------------------------------
# The models (untrained skeletons: training and loading fill the same ones)
# ----------------------------------------------------------------------------------------------------------


def ae_name(kind: str, f: int, remedy: bool = True) -> str:
    return f"ae-{kind}-f{f}" + ("" if remedy else "-noremedy")


def autoencoder_names(r: LatentRecipe) -> list[str]:
    return ([ae_name(k, f) for k in nets.AE_KINDS for f in r.factors] + [ae_name("vq", r.no_remedy_f, False)])


def build_autoencoder(r: LatentRecipe, name: str):
    kind, f = name.split("-")[1], int(name.split("-")[2][1:])
    return nets.build_autoencoder(kind, f, latent_channels=r.latent_channels, sample_size=r.size,
                                  preset=r.ae_preset, num_vq_embeddings=r.vq_codes)


def build_diffusion(r: LatentRecipe, name: str, autoencoder=None) -> latent.LatentDiffusion:
    """``"pixel"``: a U-Net on 1 × 32 × 32 images; ``"latent"``: the same U-Net on the 4 × 4 × 4 latents of
    ``autoencoder``; ``"cond"``: a cross-attention U-Net on those latents, conditioned on the digit class."""
    schedule = diffusion.NoiseSchedule.from_name("linear", r.T)
    side = r.size // r.diffusion_f
    if name == "pixel":
        return latent.LatentDiffusion(nets.build_unet(r.size, 1, preset=r.unet_preset), schedule)
    if autoencoder is None:
        raise ValueError(f"the {name!r} model diffuses latents: pass its autoencoder")
    if name == "latent":
        return latent.LatentDiffusion(nets.build_unet(side, r.latent_channels, preset=r.unet_preset), schedule,
                                      autoencoder=autoencoder)
    if name == "cond":
        unet = nets.build_cond_unet(side, r.latent_channels, cross_attention_dim=r.token_dim, preset=r.unet_preset)
        return latent.LatentDiffusion(unet, schedule, autoencoder, latent.ClassTokens(10, r.n_tokens, r.token_dim),
                                      p_uncond=r.p_uncond)
    raise ValueError(f"unknown diffusion model {name!r}; choose 'pixel', 'latent' or 'cond'")


DIFFUSION_NAMES = ("pixel", "latent", "cond")


# ----------------------------------------------------------------------------------------------------------
# Training (through the one trainer)
# ----------------------------------------------------------------------------------------------------------


def _config(r: LatentRecipe, steps: int, batch: int, lr: float, ema: float | None, device: str | None,
            progress: bool) -> train.TrainConfig:
    return train.TrainConfig(steps=steps, batch_size=batch, lr=lr, ema_decay=ema, seed=r.seed, progress=progress,
                             log_every=max(1, steps // 10), device=device)


def train_autoencoder(r: LatentRecipe, name: str, x_train: torch.Tensor, steps: int | None = None,
                      device: str | None = None, progress: bool = False):
    """One autoencoder of the study, trained from scratch; returns (autoencoder in eval mode, trainer).
    VQ models use the EMA codebook with k-means init and dead-code restarts, except the ``-noremedy`` one."""
    torch.manual_seed(r.seed)
    ae = build_autoencoder(r, name)
    objective = latent.AutoencoderWithLoss(ae, codebook="loss" if name.endswith("noremedy") else "ema")
    tr = latent.train(objective, x_train, config=_config(r, r.ae_steps if steps is None else steps, r.ae_batch,
                                                         r.ae_lr, None, device, progress))
    return tr.raw_model.autoencoder.eval(), tr


def train_diffusion(r: LatentRecipe, name: str, data: dict, autoencoder=None, steps: int | None = None,
                    device: str | None = None, progress: bool = False):
    """The pixel, latent or class-conditional model, trained from scratch on the training digits (latents
    scaled by the autoencoder's stored s = 1/σ̂); returns (the EMA model in eval mode, trainer)."""
    torch.manual_seed(r.seed)
    model = build_diffusion(r, name, autoencoder)
    if device:
        model.to(device)
    z = model.encode(data["x_train"].to(next(model.parameters()).device)).cpu()
    cond = name == "cond"
    full = {"pixel": r.pixel_steps, "latent": r.latent_steps, "cond": r.cond_steps}[name]
    cfg = _config(r, full if steps is None else steps, r.cond_batch if cond else r.uncond_batch, r.diff_lr,
                  r.diff_ema, device, progress)
    tr = latent.train(model, *((z, data["y_train"]) if cond else (z,)), config=cfg)
    return tr.ema_model.eval(), tr


def model_names(r: LatentRecipe) -> list[str]:
    """Every model of the recipe, in training order (the KL autoencoder of the latent models before them)."""
    return autoencoder_names(r) + list(DIFFUSION_NAMES)


def train_all(r: LatentRecipe, data: dict, names=None, have: dict | None = None, device: str | None = None,
              progress: bool = True, log=lambda msg: print(msg, flush=True)) -> dict:
    """The models ``names`` (default: all) from scratch: {name: model}, plus ``"histories"`` {name: history}.
    ``have`` holds models already trained (by this code, e.g. in another process) that the latent models need."""
    names = model_names(r) if names is None else list(names)
    unknown = set(names) - set(model_names(r))
    if unknown:
        raise ValueError(f"unknown model names {sorted(unknown)}; the recipe has {model_names(r)}")
    models, histories = dict(have or {}), dict((have or {}).get("histories", {}))
    ae_key = ae_name("kl", r.diffusion_f)
    for name in [n for n in model_names(r) if n in names]:
        t0 = time.perf_counter()
        if name in DIFFUSION_NAMES:
            ae = None
            if name != "pixel":
                if ae_key not in models:
                    raise ValueError(f"the {name!r} model needs {ae_key}: train it too or pass it in have=")
                ae = models[ae_key]
            models[name], tr = train_diffusion(r, name, data, ae, device=device, progress=progress)
        else:
            models[name], tr = train_autoencoder(r, name, data["x_train"], device=device, progress=progress)
            if name == ae_key:
                latent.set_scale_factor(models[name], latent.estimate_scale_factor(
                    models[name], data["x_train"], generator=torch.Generator().manual_seed(r.seed)))
        histories[name] = tr.history
        log(f"{name}: {tr.step} steps in {time.perf_counter() - t0:.0f} s, final loss {tr.history[-1]['loss']:.4f}")
    models["histories"] = histories
    return models


# ----------------------------------------------------------------------------------------------------------
# The recipe hash and the shipped weights
# ----------------------------------------------------------------------------------------------------------

# Everything whose change changes the trained weights: its source code goes into the hash.
RECIPE_CODE = (LatentRecipe, digits_split, ae_name, autoencoder_names, model_names, build_autoencoder, build_diffusion, _config, train_autoencoder,
               train_diffusion, train_all, latent.AutoencoderWithLoss, latent.ema_codebook_update, latent.kmeans,
               latent.quantize, latent.vq_losses, latent.reconstruction_loss, latent.LatentDiffusion,
               latent.ClassTokens, latent.drop_condition, latent.estimate_scale_factor, latent.encode,
               diffusion.loss_simple, diffusion.NoiseSchedule, nets.build_autoencoder, nets.build_unet,
               nets.build_cond_unet, nets._unet_common, digits.digits_images, digits.batch_sampler,
               train.Trainer.train_step, train.Trainer._update_ema, train.step_seed)


def recipe_hash(r: LatentRecipe) -> str:
    """sha256 (first 16 hex digits) of the recipe's numbers, the presets and the source of ``RECIPE_CODE``."""
    h = hashlib.sha256(json.dumps(asdict(r), sort_keys=True).encode())
    h.update(repr((nets.AE_PRESETS, nets.UNET_PRESETS)).encode())
    for obj in RECIPE_CODE:
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:16]


class StaleWeights(RuntimeError):
    """Shipped weights made by another recipe or other code than this one."""


def save_models(models: dict, r: LatentRecipe, out: str | Path, provenance: dict | None = None) -> Path:
    """Write every model's weights (floating point as fp16) and ``recipe.json`` (recipe, hash, latent scale,
    training histories, provenance) to ``out``, atomically."""
    out = Path(out)
    tensors = {}
    missing = [n for n in model_names(r) if n not in models]
    if missing:
        raise ValueError(f"cannot ship: models {missing} are not trained")
    for name in model_names(r):
        module = models[name]
        skip = "autoencoder." if isinstance(module, latent.LatentDiffusion) else None   # stored once, by name
        for k, v in module.state_dict().items():
            if skip and k.startswith(skip):
                continue
            tensors[f"{name}/{k}"] = (v.half() if v.is_floating_point() else v).contiguous().cpu()
    meta = {"recipe": asdict(r), "recipe_hash": recipe_hash(r),
            "scale_factor": float(models[ae_name("kl", r.diffusion_f)].config.scaling_factor),
            "histories": models.get("histories", {}), "provenance": provenance or {}}
    with train.atomic_folder(out) as tmp:
        save_file(tensors, str(tmp / "models.safetensors"))
        (tmp / "recipe.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
    return out


def shipped_hash(folder: str | Path = SHIPPED_DIR) -> str:
    """The recipe hash the shipped weights in ``folder`` were made with."""
    path = Path(folder) / "recipe.json"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped latent-digit weights at {folder}; make them with `{SHIP_COMMAND}` "
                                f"or set RETRAIN = True in notebook 04")
    return json.loads(path.read_text())["recipe_hash"]


def load_shipped(r: LatentRecipe = QUICK, folder: str | Path = SHIPPED_DIR, device: str | torch.device = "cpu") -> dict:
    """The models of ``r`` from the shipped weights (fp16 on disk, float32 here), after checking that they were
    made by this recipe and this code (:func:`recipe_hash`); ``"histories"`` holds their training logs."""
    folder = Path(folder)
    found, want = shipped_hash(folder), recipe_hash(r)
    if found != want:
        raise StaleWeights(f"the weights in {folder} were made with recipe hash {found}, but this recipe and code "
                           f"hash to {want}: the recipe or the training code changed. Retrain and re-ship: "
                           f"`{SHIP_COMMAND}` (or RETRAIN = True in notebook 04 to train without shipping)")
    meta = json.loads((folder / "recipe.json").read_text())
    tensors = load_file(str(folder / "models.safetensors"))
    models = {}

    def fill(name, module):
        return _fill(module, {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + "/")},
                     name).to(device)

    for name in autoencoder_names(r):
        models[name] = fill(name, build_autoencoder(r, name))
    ae = models[ae_name("kl", r.diffusion_f)]
    latent.set_scale_factor(ae, meta["scale_factor"])
    for name in DIFFUSION_NAMES:
        models[name] = fill(name, build_diffusion(r, name, None if name == "pixel" else ae))
    models["histories"] = meta["histories"]
    models["provenance"] = meta["provenance"]
    return models


def _fill(module: torch.nn.Module, state: dict, name: str) -> torch.nn.Module:
    """Load ``state`` (a model's state dict; a latent model's may lack its autoencoder) into ``module``."""
    missing, unexpected = module.load_state_dict({k: v.float() if v.is_floating_point() else v
                                                  for k, v in state.items()}, strict=False)
    if unexpected or any(not k.startswith("autoencoder.") for k in missing):
        raise StaleWeights(f"{name}: the stored tensors do not fit the model (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]}); retrain and re-ship: `{SHIP_COMMAND}`")
    return module.eval()


def save_part(models: dict, r: LatentRecipe, path: str | Path, names, provenance: dict) -> None:
    """Models trained by one process, for :func:`load_part` in the process that ships them all."""
    ae = models.get(ae_name("kl", r.diffusion_f))
    torch.save({"recipe_hash": recipe_hash(r), "names": list(names), "provenance": provenance,
                "states": {n: {k: v for k, v in models[n].state_dict().items() if not k.startswith("autoencoder.")}
                           for n in names},
                "histories": {n: models["histories"][n] for n in names},
                "scale_factor": None if ae is None else float(ae.config.scaling_factor)}, path)


def load_part(r: LatentRecipe, path: str | Path, models: dict) -> dict:
    """Add the models of a :func:`save_part` file to ``models`` (checked against this recipe's hash)."""
    part = torch.load(path, map_location="cpu", weights_only=False)
    if part["recipe_hash"] != recipe_hash(r):
        raise StaleWeights(f"{path} was trained with recipe hash {part['recipe_hash']}, not {recipe_hash(r)}")
    ae_key = ae_name("kl", r.diffusion_f)
    for name in sorted(part["names"], key=model_names(r).index):
        if name in DIFFUSION_NAMES:
            models[name] = _fill(build_diffusion(r, name, None if name == "pixel" else models[ae_key]),
                                 part["states"][name], name)
        else:
            models[name] = _fill(build_autoencoder(r, name), part["states"][name], name)
            if name == ae_key:
                latent.set_scale_factor(models[name], part["scale_factor"])
    models.setdefault("histories", {}).update(part["histories"])
    models.setdefault("parts", []).append(part["provenance"])
    return models


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dfs.latent_study",
                                description="train notebook 04's models from scratch and write them as shipped "
                                            "weights (recipe, hash, histories)")
    p.add_argument("--out", default=str(SHIPPED_DIR), help="the shipped-weights folder to write")
    p.add_argument("--full", action="store_true", help="the full recipe instead of the quick one")
    p.add_argument("--only", default=None, help="comma-separated model names to train (default: all)")
    p.add_argument("--parts", nargs="*", default=[], help="files of models already trained by --part-out")
    p.add_argument("--part-out", default=None, help="write the trained models here instead of shipping")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    r = recipe(quick=not a.full)
    models = {}
    for part in a.parts:
        load_part(r, part, models)
    names = model_names(r) if a.only is None else [n for n in a.only.split(",") if n]
    t0, c0 = time.perf_counter(), time.process_time()
    models = train_all(r, digits_split(r), names, have=models, device=a.device, progress=False)
    prov = {"command": " ".join(["python -m dfs.latent_study", *(sys.argv[1:] if argv is None else argv)]),
            "trained": names, "commit": git_commit(), "wall_seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1), "torch_threads": a.threads,
            "torch": torch.__version__, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if a.part_out:
        save_part(models, r, a.part_out, names, prov)
        print(f"wrote {a.part_out}")
        return 0
    prov = {**prov, "parts": models.get("parts", [])}
    print(f"wrote {save_models(models, r, a.out, prov)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
