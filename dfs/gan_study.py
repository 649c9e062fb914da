"""The study of notebook 02b: six GAN variants against the diffusion model of notebook 02 on 2-D Gaussian mixtures.

Everything the notebook shows is computed here, as data: :func:`run_study` trains every GAN variant of
:data:`dfs.gan.VARIANTS` (all seeds and datasets of one variant as one batched model) and the diffusion reference
(``toy.train_toy``, an :class:`~dfs.toy.MLPEpsModel` sized to the generator's parameter count, sampled with DDPM and
DDIM), measures at every checkpoint the modes covered, the fraction of high-quality samples, the MMD to held-out data
and the discriminator's input-gradient norms, and keeps a few sample sets for the figure. :func:`final_table` turns
that into one row per method with 95 % intervals over seeds, and :func:`conclusions` states what the numbers support.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from . import diffusion as D
from . import gan as G
from . import toy
from .results import claim
from .stats import mean_interval, welch_interval
from .smoke import smoke_caps

MIXTURES = {"eight_gaussians": toy.eight_gaussians_gmm, "grid25": toy.grid_gmm}
TITLES = {"eight_gaussians": "8 Gaussians (ring)", "grid25": "5×5 grid"}


@dataclass(frozen=True)
class StudyConfig:
    """The whole study's options (the notebook's quick and full modes are two instances)."""
    datasets: tuple[str, ...] = ("eight_gaussians", "grid25")
    seeds: int = 10
    steps: int = 5000                 # generator updates of every GAN
    eval_every: int = 250             # checkpoints for modes/quality/MMD/gradients
    n_eval: int = 1000                # samples per checkpoint (modes, high-quality fraction)
    n_mmd: int = 500                  # of which the MMD uses this many (against as many held-out points)
    n_final: int = 2000               # samples of the final evaluation
    variants: tuple[str, ...] = tuple(G.VARIANTS)
    shown_steps: tuple[int, ...] = (250, 500, 1000, 2500, 5000)   # the columns of the sample grid
    diffusion_steps: int = 3000       # L_simple training steps of the reference
    diffusion_batch: int = 256
    diffusion_lr: float = 2e-3
    T: int = 1000
    ddim_steps: tuple[int, ...] = (50, 10)
    seed: int = 0

    def __post_init__(self):
        caps = smoke_caps()
        if caps is not None:   # DFS_SMOKE=1: every dataset and variant, a couple of seeds, steps and checkpoints
            steps = min(self.steps, caps.max_train_steps)
            every = max(1, steps // caps.max_grid)
            for name, value in (("seeds", min(self.seeds, caps.max_seeds)), ("steps", steps), ("eval_every", every),
                                ("shown_steps", tuple(range(every, steps + 1, every))),
                                ("diffusion_steps", min(self.diffusion_steps, caps.max_train_steps)),
                                ("diffusion_batch", min(self.diffusion_batch, caps.max_batch))):
                object.__setattr__(self, name, value)
        unknown = set(self.datasets) - set(MIXTURES) or set(self.variants) - set(G.VARIANTS)
        if unknown:
            raise ValueError(f"unknown dataset or variant {sorted(unknown)}; datasets: {sorted(MIXTURES)}, "
                             f"variants: {sorted(G.VARIANTS)}")
        if self.seeds < 2:
            raise ValueError("intervals over seeds need at least 2 seeds")
        if self.steps % self.eval_every or any(s % self.eval_every or s > self.steps for s in self.shown_steps):
            raise ValueError("steps and every shown step must be multiples of eval_every, shown steps ≤ steps")


@dataclass
class StudyResult:
    config: StudyConfig
    curves: dict = field(default_factory=dict)     # (dataset, method) -> {"steps": [...], metric: (seeds, ckpts)}
    finals: dict = field(default_factory=dict)     # (dataset, method) -> {metric: [per seed]}
    samples: dict = field(default_factory=dict)    # (dataset, method, label) -> (n, 2) of seed 0
    floor: dict = field(default_factory=dict)      # dataset -> data-vs-data numbers
    cpu_seconds: dict = field(default_factory=dict)  # method -> training CPU seconds (all members)
    n_params: dict = field(default_factory=dict)


def evaluate(gmm: toy.GaussianMixture, x: torch.Tensor, held_out: torch.Tensor, n_mmd: int) -> dict:
    """modes covered, high-quality fraction (:func:`toy.mode_quality`), MMD² to held-out data (:func:`toy.mmd_rbf`)."""
    q = toy.mode_quality(gmm, x)
    return {"modes": q["modes"], "hq": q["hq"], "mmd": toy.mmd_rbf(x[:n_mmd], held_out[:n_mmd]).item(),
            "covered": q["covered"]}


def gradient_norms(gan: G.GAN, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E‖∇_x D(x)‖ at real and at generated samples, per member (the discriminator in eval mode: no power step)."""
    was = gan.d_net.training
    gan.d_net.eval()
    try:
        g_real = G.input_gradient(gan.d_net, real).norm(dim=-1).mean(1)
        g_fake = G.input_gradient(gan.d_net, fake).norm(dim=-1).mean(1)
    finally:
        gan.d_net.train(was)
    return g_real, g_fake


def seconds_per_1000(fn, n: int) -> float:
    """CPU seconds (this process, one thread) that ``fn()`` takes, scaled to 1 000 points of n."""
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) * 1000 / n


def run_gan_variant(name: str, cfg: StudyConfig, result: StudyResult, held_out: dict, progress=None) -> None:
    """Train one variant on every (dataset, seed) as one batched model and record its curves and final numbers."""
    members = [(d, s) for d in cfg.datasets for s in range(cfg.seeds)]
    gmms = [MIXTURES[d]() for d, _ in members]
    run = G.GanRun(G.VARIANTS[name], gmms, [1000 * cfg.seed + 17 * i for i in range(len(members))], seed=cfg.seed)
    result.n_params["GAN generator"] = G.n_parameters(run.gan.g_net)
    result.n_params["GAN discriminator"] = G.n_parameters(run.gan.d_net)
    g_eval = torch.Generator().manual_seed(cfg.seed + 1)
    z = torch.randn(len(members), cfg.n_eval, G.VARIANTS[name].z_dim, generator=g_eval)
    curves = {d: {"steps": [], "modes": [], "hq": [], "mmd": [], "grad_real": [], "grad_fake": [], "covered": []}
              for d in cfg.datasets}
    cpu = 0.0
    for step in range(cfg.eval_every, cfg.steps + 1, cfg.eval_every):
        t0 = time.process_time()
        run.fit(step)
        cpu += time.process_time() - t0
        x = run.gan.sample(cfg.n_eval, z=z)
        real = torch.stack([held_out[d][: cfg.n_mmd] for d, _ in members])
        g_real, g_fake = gradient_norms(run.gan, real, x[:, : cfg.n_mmd])
        rows = [evaluate(g, xi, held_out[d], cfg.n_mmd) for g, xi, (d, _) in zip(gmms, x, members)]
        for d in cfg.datasets:
            idx = [i for i, (dd, _) in enumerate(members) if dd == d]
            c = curves[d]
            if not c["steps"] or c["steps"][-1] != step:
                c["steps"].append(step)
            for key in ("modes", "hq", "mmd", "covered"):
                c[key].append([rows[i][key] for i in idx])
            c["grad_real"].append([g_real[i].item() for i in idx])
            c["grad_fake"].append([g_fake[i].item() for i in idx])
            if step in cfg.shown_steps:
                result.samples[d, name, step] = x[idx[0]].clone()
        if progress is not None:
            progress.set_postfix_str(f"{name} {step}/{cfg.steps}")
    result.cpu_seconds[name] = cpu
    xf = run.gan.sample(cfg.n_final, generator=torch.Generator().manual_seed(cfg.seed + 2))
    per_point = seconds_per_1000(lambda: run.gan.sample(cfg.n_final, generator=g_eval), cfg.n_final * len(members))
    for d in cfg.datasets:
        c = curves[d]
        arr = {k: np.asarray(v, dtype=float).T for k, v in c.items() if k not in ("steps", "covered")}
        covered = torch.stack([torch.stack(list(cc)) for cc in c["covered"]]).transpose(0, 1)   # (seeds, ckpts, K)
        hops = [toy.mode_drops(cov) for cov in covered]
        result.curves[d, name] = {"steps": list(c["steps"]), **arr, "covered": covered}
        idx = [i for i, (dd, _) in enumerate(members) if dd == d]
        fin = [evaluate(gmms[i], xf[i], held_out[d], cfg.n_final) for i in idx]
        result.finals[d, name] = {
            "modes": [f["modes"] for f in fin], "hq": [f["hq"] for f in fin], "mmd": [f["mmd"] for f in fin],
            "drops": [h["drops"] for h in hops], "forgotten": [h["forgotten"] for h in hops],
            "grad_fake": list(arr["grad_fake"][:, -1]), "grad_real": list(arr["grad_real"][:, -1]),
            "nfe": 1, "cpu_per_1000": per_point, "train_cpu": cpu * len(idx) / len(members)}


def matched_hidden(n_params: int, layers: int = 3, time_dim: int = 32) -> int:
    """The hidden width of a :class:`toy.MLPEpsModel` whose parameter count is closest to ``n_params``."""
    count = lambda h: sum(p.numel() for p in toy.MLPEpsModel(2, h, layers, time_dim).parameters())
    return min(range(8, 257, 2), key=lambda h: abs(count(h) - n_params))


def run_diffusion(cfg: StudyConfig, result: StudyResult, held_out: dict, n_params: int, progress=None) -> None:
    """The reference: notebook 02's MLP ε-model (``toy.train_toy``, L_simple) per dataset and seed, sampled with
    DDPM (T steps) and DDIM (``cfg.ddim_steps``); the same final metrics as the GANs, plus sampling cost."""
    sched = D.NoiseSchedule.from_name("linear", cfg.T)
    hidden = matched_hidden(n_params)
    samplers = {f"DDPM {cfg.T}": (cfg.T, lambda m, x_T, g: D.ddpm_sample(m, sched, x_T.shape, generator=g, x_T=x_T,
                                                                           progress=False))}
    for k in cfg.ddim_steps:
        samplers[f"DDIM {k}"] = (k, lambda m, x_T, g, k=k: D.ddim_sample(m, sched, x_T.shape, steps=k, x_T=x_T,
                                                                         progress=False))
    for d in cfg.datasets:
        gmm = MIXTURES[d]()
        finals = {s: {"modes": [], "hq": [], "mmd": [], "cpu_per_1000": []} for s in samplers}
        cpu = 0.0
        for seed in range(cfg.seeds):
            t0 = time.process_time()
            model, _ = toy.train_toy(d, sched, steps=cfg.diffusion_steps, batch_size=cfg.diffusion_batch,
                                     lr=cfg.diffusion_lr, seed=1000 * cfg.seed + seed, hidden=hidden, layers=3,
                                     progress=False, device="cpu", model=toy.MLPEpsModel(2, hidden, 3, 32))
            cpu += time.process_time() - t0
            result.n_params["diffusion ε-model"] = sum(p.numel() for p in model.parameters())
            g = torch.Generator().manual_seed(1000 * cfg.seed + seed)
            for s, (nfe, sample) in samplers.items():
                x_T = torch.randn(cfg.n_final, 2, generator=g)
                t0 = time.process_time()
                with torch.no_grad():
                    x = sample(model, x_T, g)
                finals[s]["cpu_per_1000"].append((time.process_time() - t0) * 1000 / cfg.n_final)
                f = evaluate(gmm, x, held_out[d], cfg.n_final)
                for key in ("modes", "hq", "mmd"):
                    finals[s][key].append(f[key])
                if seed == 0:
                    result.samples[d, "diffusion", s] = x
            if progress is not None:
                progress.set_postfix_str(f"diffusion {d} seed {seed}")
        for s, (nfe, _) in samplers.items():
            result.finals[d, f"diffusion · {s}"] = {**finals[s], "nfe": nfe, "drops": None, "forgotten": None,
                                                    "grad_fake": None, "grad_real": None,
                                                    "cpu_per_1000": float(np.mean(finals[s]["cpu_per_1000"])),
                                                    "train_cpu": cpu}


def data_floor(cfg: StudyConfig, held_out: dict) -> dict:
    """What data itself scores: fresh draws against the held-out set (modes, high-quality fraction, MMD²),
    one value per seed — the resolution of every number in the table."""
    out = {}
    for d in cfg.datasets:
        gmm = MIXTURES[d]()
        g = torch.Generator().manual_seed(cfg.seed + 3)
        fin = [evaluate(gmm, gmm.sample(cfg.n_final, g), held_out[d], cfg.n_final) for _ in range(cfg.seeds)]
        out[d] = {"modes": [f["modes"] for f in fin], "hq": [f["hq"] for f in fin], "mmd": [f["mmd"] for f in fin],
                  "mmd_eval": [toy.mmd_rbf(gmm.sample(cfg.n_mmd, g), held_out[d][: cfg.n_mmd]).item()
                               for _ in range(cfg.seeds)]}
    return out


def run_study(cfg: StudyConfig, progress: bool = True) -> StudyResult:
    """Every GAN variant, the diffusion reference and the data floor (see the module docstring)."""
    result = StudyResult(cfg)
    g = torch.Generator().manual_seed(cfg.seed + 4)
    held_out = {d: MIXTURES[d]().sample(max(cfg.n_final, cfg.n_mmd), g) for d in cfg.datasets}
    result.floor = data_floor(cfg, held_out)
    bar = tqdm(list(cfg.variants) + ["diffusion"], desc="GAN vs diffusion", disable=not progress)
    for name in bar:
        if name == "diffusion":
            t0 = time.process_time()
            run_diffusion(cfg, result, held_out, result.n_params["GAN generator"], bar)
            result.cpu_seconds["diffusion"] = time.process_time() - t0
        else:
            run_gan_variant(name, cfg, result, held_out, bar)
    return result


def final_table(result: StudyResult) -> list[dict]:
    """One row per dataset and method (the data floor first): each metric's mean over seeds with its 95 % Student-t
    interval (:func:`dfs.stats.mean_interval`) in ``"<metric> low"``/``"<metric> high"``, the columns the results
    chapter reads."""
    cfg, rows = result.config, []

    def cells(column, values, scale=1.0):
        if values is None:
            return {column: None, f"{column} low": None, f"{column} high": None}
        m, lo, hi = mean_interval(np.asarray(values, dtype=float) * scale)
        return {column: m, f"{column} low": lo, f"{column} high": hi}

    for d in cfg.datasets:
        k = MIXTURES[d]().n_components
        fl = result.floor[d]
        rows.append({"data": TITLES[d], "method": "data (fresh draws)", **cells("modes", fl["modes"]), "of K modes": k,
                     **cells("high-quality", fl["hq"]), **cells("MMD² ×1e3", fl["mmd"], 1e3),
                     **cells("mode drops [12]", None), **cells("forgotten [12]", None),
                     **cells("‖∇D‖ at G(z)", None), "network evals": None, "CPU ms / 1000 pts": None, "ref.": ""})
        for (dd, method), f in result.finals.items():
            if dd != d:
                continue
            cite = G.VARIANTS[method].cite if method in G.VARIANTS else "Ho et al. 2020; Song et al. 2021"
            rows.append({"data": TITLES[d], "method": method, **cells("modes", f["modes"]), "of K modes": k,
                         **cells("high-quality", f["hq"]), **cells("MMD² ×1e3", f["mmd"], 1e3),
                         **cells("mode drops [12]", f["drops"]), **cells("forgotten [12]", f["forgotten"]),
                         **cells("‖∇D‖ at G(z)", f["grad_fake"]), "network evals": f["nfe"],
                         "CPU ms / 1000 pts": 1e3 * f["cpu_per_1000"], "ref.": cite})
    return rows


def difference_table(result: StudyResult) -> tuple[list[dict], list[dict]]:
    """(rows, claims): per dataset, DDPM's modes minus each GAN variant's, and DDPM's high-quality fraction minus
    the best GAN's, each with Welch's 95 % interval over seeds (:func:`dfs.stats.welch_interval`) in
    ``"DDPM − GAN low"``/``"DDPM − GAN high"``; one claim per row that the difference is above 0 (diffusion
    better), judged by the results chapter from the interval (the same test as :func:`conclusions`)."""
    cfg, rows, claims = result.config, [], []
    ddpm = f"diffusion · DDPM {cfg.T}"
    for d in cfg.datasets:
        ref = result.finals[d, ddpm]
        gans = {m: f for (dd, m), f in result.finals.items() if dd == d and m in G.VARIANTS}
        pairs = [("modes", "modes", m, f"diffusion covers more modes than {m}") for m in gans]
        if gans:
            best = max(gans, key=lambda m: np.mean(gans[m]["hq"]))
            pairs.append(("hq", "high-quality fraction", best,
                          f"diffusion's samples are closer to the modes than the best GAN's ({best})"))
        for key, label, m, text in pairs:
            est, lo, hi = welch_interval(ref[key], gans[m][key])
            row = f"{TITLES[d]}: {label}, DDPM {cfg.T} − {m}"
            rows.append({"difference": row, "DDPM − GAN": est, "DDPM − GAN low": lo, "DDPM − GAN high": hi,
                         "seeds": len(ref[key])})
            claims.append(claim(f"{TITLES[d]}: {text}", row=row, column="DDPM − GAN", better="higher", versus=0.0))
    return rows, claims


def _show(values, spec: str) -> str:
    """"mean [low, high]" of a metric over seeds (its 95 % Student-t interval)."""
    m, lo, hi = mean_interval(values)
    return f"{m:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def conclusions(result: StudyResult) -> list[str]:
    """Statements the numbers support, each with its interval; "inconclusive" where the interval allows both."""
    cfg, out = result.config, []
    ddpm = f"diffusion · DDPM {cfg.T}"
    for d in cfg.datasets:
        k = MIXTURES[d]().n_components
        title = TITLES[d]
        diff_rows = {m: f for (dd, m), f in result.finals.items() if dd == d and m.startswith("diffusion")}
        gans = {m: f for (dd, m), f in result.finals.items() if dd == d and m in G.VARIANTS}
        for m, f in diff_rows.items():
            full = sum(v == k for v in f["modes"])
            out.append(f"{title}: {m} covers all {k} modes in {full} of {len(f['modes'])} seeds "
                       f"(modes {_show(f['modes'], '.1f')}; high-quality {_show(f['hq'], '.3f')}).")
        ref = diff_rows[ddpm]
        holds = all(v == k for v in ref["modes"])
        for m, f in gans.items():
            est, lo, hi = welch_interval(ref["modes"], f["modes"])
            verdict = ("diffusion covers more modes" if lo > 0 else "the GAN covers more modes" if hi < 0
                       else "inconclusive")
            out.append(f"{title}: modes(DDPM) − modes({m}) = {est:+.1f} [{lo:+.1f}, {hi:+.1f}] → {verdict}; "
                       f"{m} dropped a covered mode {_show(f['drops'], '.1f')} times per run "
                       f"({sum(x > 0 for x in f['drops'])} of {len(f['drops'])} runs dropped one at least once; "
                       f"{sum(x > 0 for x in f['forgotten'])} ended without a mode they had covered).")
        complete = [m for m, f in gans.items() if all(v == k for v in f["modes"])]
        out.append(f"{title}: GAN variants covering all {k} modes in every seed: "
                   f"{', '.join(complete) if complete else 'none'}.")
        best = max(gans, key=lambda m: np.mean(gans[m]["hq"]))
        est, lo, hi = welch_interval(ref["hq"], gans[best]["hq"])
        tag = ("diffusion's samples are closer to the modes" if lo > 0 else
               f"{best}'s samples are closer to the modes" if hi < 0 else "inconclusive")
        out.append(f"{title}: high-quality fraction, DDPM − the best GAN ({best}) = {est:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                   f"→ {tag} (data itself: {np.mean(result.floor[d]['hq']):.3f}).")
        worse = [m for m, f in gans.items() if welch_interval(ref["modes"], f["modes"])[1] > 0]
        if holds and worse:
            verdict = (f"holds here: every DDPM run covers all {k} modes, and it covers significantly more than "
                       f"{', '.join(worse)}")
        elif holds:
            verdict = (f"holds for diffusion (every DDPM run covers all {k} modes) but no GAN variant is "
                       f"significantly worse at this budget: inconclusive as a contrast")
        else:
            verdict = "does not hold here: some DDPM runs miss modes"
        cost = ref["cpu_per_1000"] / np.mean([f["cpu_per_1000"] for f in gans.values()])
        out.append(f"{title}: 'diffusion does not collapse' {verdict}. Its cost: {ref['nfe']} network evaluations per "
                   f"sample against 1 for a GAN, {1e3 * ref['cpu_per_1000']:.0f} CPU ms per 1000 points against "
                   f"{1e3 * np.mean([f['cpu_per_1000'] for f in gans.values()]):.2f} (×{cost:.0f}).")
        for k_steps in cfg.ddim_steps:
            f = diff_rows[f"diffusion · DDIM {k_steps}"]
            est, lo, hi = welch_interval(f["hq"], ref["hq"])
            tag = "lower" if hi < 0 else "higher" if lo > 0 else "indistinguishable (inconclusive)"
            out.append(f"{title}: DDIM {k_steps} ({k_steps} evaluations) vs DDPM {cfg.T}: high-quality fraction "
                       f"{est:+.3f} [{lo:+.3f}, {hi:+.3f}] → {tag}; modes {np.mean(f['modes']):.1f} of {k}.")
    return out
