"""The thesis map: every section, equation, figure, appendix, reference and tool of the thesis draft, and where
this project makes it real (a notebook section, a ``dfs`` function), with a status.

The draft is ``draft_ru.txt`` in the shared folder (``$DFS_SHARED/thesis/``, else ``<repo>/../shared/thesis/``);
it is not part of the repository. Each :class:`Entry` quotes the draft **verbatim** with its 1-based line number,
so that the map can be checked against the file (:func:`check_entry`, ``tests/test_thesis_map.py``):

    from dfs.thesis_map import ENTRIES, to_markdown
    print(to_markdown(ENTRIES))

Status: ``covered`` (the thing is implemented and shown), ``partly`` (some of it, the note says what is missing),
``not covered`` (nothing here yet, the note says why). Notebook 00 renders the map; notebook 09's §2.4 lists what
is not covered as further work.
"""
from __future__ import annotations

import importlib
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .labels import lbl
from .paths import draft_lines, draft_path, repo_root

COVERED, PARTLY, NOT_COVERED = "covered", "partly", "not covered"
STATUSES = (COVERED, PARTLY, NOT_COVERED)
KINDS = ("section", "equation", "figure", "algorithm", "appendix", "reference", "tool")


@dataclass(frozen=True)
class Entry:
    """One item of the draft and where the project makes it real.

    ``label``: how the thesis numbers it ("§1.1.1", "eq. (2)", "Fig. 1.4", "[5]", "App. 2", "tool: wandb").
    ``line``/``quote``: the draft's 1-based line and a string found verbatim on it. ``notebooks``: (notebook
    stem, heading) pairs, the heading being the start of a Markdown heading of that notebook (without the
    ``#``). ``code``: dotted paths of ``dfs`` objects (``"dfs.diffusion.q_sample"``). ``figures``: names the
    notebooks pass to ``dfs.figures.save``. ``note``: what is done, or why not."""

    kind: str
    label: str
    line: int
    quote: str
    status: str
    notebooks: tuple[tuple[str, str], ...] = ()
    code: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()
    note: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.label}: kind {self.kind!r} is not one of {KINDS}")
        if self.status not in STATUSES:
            raise ValueError(f"{self.label}: status {self.status!r} is not one of {STATUSES}")
        if self.line < 1 or not self.quote:
            raise ValueError(f"{self.label}: needs a line number >= 1 and a non-empty quote")
        if self.status != NOT_COVERED and not (self.notebooks or self.code):
            raise ValueError(f"{self.label}: a {self.status!r} entry must point at a notebook or a dfs object")
        if self.status != COVERED and not self.note:
            raise ValueError(f"{self.label}: say in the note why it is {self.status!r}")


NB01, NB02, NB03, NB04 = ("01_ddpm_forward_reverse", "02_toy_2d_diffusion", "03_elbo_losses",
                          "04_latent_diffusion")
NB05, NB06, NB07, NB08 = "05_faces_identity", "06_swap_training", "07_swap_evaluation", "08_faceshifter"
NB00, NB09, NB02B = "00_thesis_map", "09_results", "02b_gan_vs_diffusion"
NB08B = "08b_personalisation_compression"
NB08B_NOTE = ("quick mode personalises one held-out person with 10 training steps per variant; full mode (4 people, "
              "150 steps) is not run yet")
GAN_NOTE = ("measured on the 2-D mixtures in quick mode on the 8-Gaussian ring with 3 seeds; the 5×5 grid and 10 "
            "seeds are the full mode, not run yet")
GAN_NB = ((NB02B, "2. Six GANs and the diffusion reference"), (NB02B, "6. The final table"))

E = Entry
ENTRIES: tuple[Entry, ...] = (
    # ---- front matter and sections ---------------------------------------------------------------------------
    E("section", "Abstract", 15, "N рисунок, N таблицу, N использованных источников", PARTLY,
      notebooks=((NB09, "§2.2 Experimental results"),), code=("dfs.results_chapter.build_chapter",),
      note="the counts are the author's to fill; notebook 09 counts the recorded tables and figures/MANIFEST.json "
           "the figures"),
    E("section", "Introduction", 45, "TBD", NOT_COVERED, note="the draft's introduction is empty (TBD): text only"),
    E("section", "§1.1.1", 53, "1.1.1 Общие сведения о диффузионных моделях", COVERED,
      notebooks=((NB01, "1. The forward process"), (NB02, "3. Training an MLP")), code=("dfs.diffusion",)),
    E("section", "§1.1.1 GAN problems", 55, "Основными проблемами, сохранившимися до сих пор, являются "
      "нестабильность обучения [9]", COVERED,
      notebooks=((NB02B, "4. Modes, quality and gradient norms over training"), (NB02B, "5. Mode hopping: forgetting modes during training")),
      code=("dfs.gan.train_gan", "dfs.toy.mode_drops"), note=GAN_NOTE),
    E("section", "§1.1.1 forward process", 59, "Прямой процесс", COVERED,
      notebooks=((NB01, "1. The forward process"),), code=("dfs.diffusion.q_step", "dfs.diffusion.q_sample")),
    E("section", "§1.1.1 reverse process", 86, "Обратный процесс", COVERED,
      notebooks=((NB01, "3. The reverse process"), (NB02, "4. Sampling")),
      code=("dfs.diffusion.p_mean_variance", "dfs.diffusion.ddpm_sample")),
    E("section", "§1.1.2", 136, "1.1.2 Обуславливаемые диффузионные модели (Conditioned diffusion models)", COVERED,
      notebooks=((NB04, "2. Pixel vs latent diffusion"), (NB04, "3. Class-conditional latent diffusion")),
      code=("dfs.latent.LatentDiffusion",)),
    E("section", "§1.1.2 KL regularisation", 149, "KL-регуляризация, взятая из идеи VAE [7]", COVERED,
      notebooks=((NB04, "1. Rate, distortion and meaning"),),
      code=("dfs.latent.AutoencoderWithLoss", "dfs.nets.build_autoencoder")),
    E("section", "§1.1.2 VQ regularisation", 150, "*VQ*-регуляризация, взятая из идеи VQVAE [10]", COVERED,
      notebooks=((NB04, "1. Rate, distortion and meaning"),),
      code=("dfs.latent.vq_losses", "dfs.latent.quantize", "dfs.latent.perplexity"),
      note="the draft puts the quantisation 'inside the decoder' (l.150), as LDM does; dfs uses diffusers' VQModel"),
    E("section", "§1.1.2 U-Net with cross-attention", 152, "Архитектурой была выбрана U-Net, обусловленная по шагу "
      "диффузии с добавлением механизма перекрестного внимания", COVERED,
      notebooks=((NB04, "3. Class-conditional latent diffusion"),),
      code=("dfs.nets.build_cond_unet", "dfs.latent.ClassTokens", "dfs.latent.cfg_eps")),
    E("section", "§1.1.2 concepts", 161, "В [3] предлагается использование концептов.", COVERED,
      notebooks=((NB08B, "1. Concepts: teaching the swap one person"),),
      code=("dfs.personalize.dreambooth_loss", "dfs.personalize.personalize", "dfs.personalize.personalization_study",
            "dfs.swap.concept"),
      figures=("08b_personalisation_grid",), note=NB08B_NOTE),
    E("section", "§1.1.3", 163, "1.1.3 Обучение моделей", PARTLY, code=("dfs.train.Trainer", "dfs.train.TrainConfig"),
      notebooks=((NB06, "A few live training steps"),),
      note="the draft's section is empty; every model here trains through dfs.train (EMA, checkpoints, resume)"),
    E("section", "§1.1.4", 165, "1.1.4 Задача замены лиц (Face swap)", COVERED,
      notebooks=((NB05, "5. The classical face swap"), (NB06, "The method"), (NB08, "The method")),
      code=("dfs.swap.pipeline.SwapPipeline", "dfs.swap.classical.ClassicalSwap", "dfs.swap.diffusion.DiffusionSwap",
            "dfs.swap.faceshifter.FaceShifterSwap")),
    E("section", "§1.1.4 AEI-Net", 169, "AEI-Net (Генерация целевого лица)", COVERED,
      notebooks=((NB08, "The architecture, drawn from the code"),),
      code=("dfs.swap.faceshifter.AEINet", "dfs.swap.faceshifter.AADLayer", "dfs.swap.faceshifter.AADResBlk",
            "dfs.swap.faceshifter.AttributeEncoder", "dfs.swap.faceshifter.AADGenerator"),
      note="at 64 px on a CPU, not the paper's 256 px"),
    E("section", "§1.1.4 HEAR-Net", 181, "HEAR-Net (Избавление от возможных артефактов)", COVERED,
      notebooks=((NB08, "Swaps: sources × targets, AEI-Net and HEAR-Net"),),
      code=("dfs.swap.faceshifter.HEARNet", "dfs.swap.faceshifter.heuristic_error")),
    E("section", "§1.2", 188, "1.2 Особенности поставленных экспериментов", PARTLY,
      notebooks=((NB06, "The method"), (NB07, "The protocol")), code=("dfs.evaluate.evaluate",),
      note="the draft's section is empty; the experiments' set-up is written in notebooks 06 and 07"),
    E("section", "§2.1", 196, "2.1 Используемые инструменты", PARTLY, notebooks=((NB00, "Tools of §2.1"),),
      note="each tool has its own row below; transformers and TorchIntegral (not on PyPI) are not used"),
    E("section", "§2.2", 206, "2.2 Экспериментальные результаты", COVERED,
      notebooks=((NB09, "§2.2 Experimental results"),), code=("dfs.results.record", "dfs.results_chapter.build_chapter"),
      note="assembled from the tables the notebooks record and from dfs eval's JSON"),
    E("section", "§2.3", 208, "2.3 Выводы", COVERED, notebooks=((NB09, "§2.3 Conclusions"),),
      code=("dfs.results_chapter.judge",)),
    E("section", "§2.4", 210, "2.4 Дальнейшая работа", COVERED, notebooks=((NB09, "§2.4 Further work"),),
      code=("dfs.results_chapter.further_work",)),

    # ---- equations ------------------------------------------------------------------------------------------
    E("equation", "forward step (before eq. 1)", 67, r"x_t^i = \sqrt{1 - \beta_t} \cdot x_{t-1}^i + \sqrt{\beta_t} "
      r"\cdot \epsilon", COVERED, notebooks=((NB01, "Iterating eq. (1) gives eq. (2)"),),
      code=("dfs.diffusion.q_step",)),
    E("equation", "eq. (1)", 71, r"q(x_t|x_{t-1}) = \mathcal{N}(x_t|\sqrt{1-\beta_t}x_{t-1}, \beta_t I)", COVERED,
      notebooks=((NB01, "Iterating eq. (1) gives eq. (2)"),), code=("dfs.diffusion.q_step",)),
    E("equation", "eq. (2)", 81, r"x_t \sim q(x_t|x_0) = \mathcal{N}(x_t|\sqrt{\overline{\alpha}_t}x_0, "
      r"(1-\overline{\alpha}_t)I)", COVERED, notebooks=((NB01, "Iterating eq. (1) gives eq. (2)"),),
      code=("dfs.diffusion.q_sample", "dfs.diffusion.q_mean_variance"), figures=("01_closed_form_vs_iterated",)),
    E("equation", "ᾱ_t (after eq. 2)", 84, r"\overline{\alpha_t} = \prod_{s=0}^t (1-\beta_t)", COVERED,
      notebooks=((NB01, "4. Errata"),), code=("dfs.diffusion.NoiseSchedule", "dfs.errata.draft_alpha_bar_l84"),
      note="implemented as ∏_{s=1}^t (1−β_s); the draft's index slips are in the errata"),
    E("equation", "eq. (3)", 90, r"p_{\theta}(x_{t-1}|x_t) = \mathcal{N}(x_{t-1}|\mu_{\theta}(x_t, t), "
      r"\Sigma_{\theta}(x_t, t))", COVERED, notebooks=((NB01, "3. The reverse process"),),
      code=("dfs.diffusion.p_mean_variance", "dfs.diffusion.model_p_mean_variance")),
    E("equation", "eq. (4)", 100, r"q(x_{t-1}|x_t, x_0) = \mathcal{N}(x_{t-1}, \tilde{\mu}(x_t, x_0), "
      r"\tilde{\beta}_t I)", COVERED, notebooks=((NB01, "2. The posterior"),),
      code=("dfs.diffusion.q_posterior_mean_variance", "dfs.errata.posterior_by_bayes_grid"),
      figures=("01_posterior_bayes_grid",)),
    E("equation", "β̃_t", 105, r"\tilde{\beta}_t = \frac{1 - \overline{\alpha}_{t-1}}{1 - \overline{\alpha}_t} "
      r"\cdot \beta_t", COVERED, notebooks=((NB01, "2. The posterior"),),
      code=("dfs.diffusion.q_posterior_mean_variance",)),
    E("equation", "μ̃_t(x_t, x_0)", 107, r"\tilde{\mu}_t(x_t, x_0) = x_0 + \frac{\sqrt{\alpha_t}", COVERED,
      notebooks=((NB01, "2. The posterior"), (NB01, "4. Errata")),
      code=("dfs.diffusion.q_posterior_mean_variance", "dfs.errata.draft_posterior_mean"),
      note="the draft drops x₀'s coefficient √ᾱ_{t−1}β_t/(1−ᾱ_t); the code has the full form, the errata the slip"),
    E("equation", "x₀ from ε", 111, r"x_0 = \frac{1}{\sqrt{\overline{\alpha}_t}} (x_t - \sqrt{1 - "
      r"\overline{\alpha}_t \epsilon})", COVERED, notebooks=((NB01, "4. Errata"),),
      code=("dfs.diffusion.predict_x0_from_eps",), note="ε belongs outside the square root (erratum)"),
    E("equation", "μ̃_t(x_t)", 115, r"\tilde{\mu}_t(x_t) = \frac{1}{\sqrt{\alpha_t}} \left(x_t - "
      r"\frac{\beta_t}{\sqrt{1 - \overline{\alpha}_t}} \epsilon \right)", COVERED,
      notebooks=((NB01, "3. The reverse process"),), code=("dfs.diffusion.p_mean_variance",)),
    E("equation", "μ_θ (ε-parametrisation)", 119, r"\tilde{\mu}_{\theta}(x_t, t) = \frac{1}{\sqrt{\alpha_t}}", COVERED,
      notebooks=((NB02, "3. Training an MLP"),), code=("dfs.diffusion.p_mean_variance", "dfs.toy.MLPEpsModel")),
    E("equation", "L_t", 123, r"L_{t} = \mathbb{E}_{x_{0},t,\epsilon} \left[\frac{1}{2||\Sigma_{\theta}(x_{t},t)||_{2}^{2}}",
      COVERED, notebooks=((NB03, "1. The bound and its terms"), (NB01, "4. Errata")),
      code=("dfs.diffusion.vlb_term", "dfs.errata.eps_loss_weight", "dfs.errata.draft_loss_weight"),
      note="the weight of the ε-form is β_t²/(2σ_t²α_t(1−ᾱ_t)); the draft's weight is in the errata"),
    E("equation", "L_simple", 127, r"L_t^* = \mathbb{E}_{x_0, t, \epsilon} \left[||\epsilon_t - \epsilon_\theta",
      COVERED, notebooks=((NB02, "3. Training an MLP"), (NB03, "2. Training")), code=("dfs.diffusion.loss_simple",)),
    E("equation", "learned Σ_θ [8]", 129, "Но в [8] авторы показывают, что если учить оценку ковариационной матрицы",
      COVERED, notebooks=((NB03, "3. NLL in bits/dim"),),
      code=("dfs.diffusion.learned_log_variance", "dfs.diffusion.loss_hybrid", "dfs.diffusion.loss_vlb")),
    E("equation", "cross-attention", 154, r"\text{Attention}(Q, K, V) = \text{softmax}\Big(\frac{QK^\top}{\sqrt{d}}\Big)",
      PARTLY, notebooks=((NB04, "3. Class-conditional latent diffusion"),),
      code=("dfs.latent.capture_cross_attention", "dfs.latent.CrossAttentionStore"), figures=("04_cross_attention_maps",),
      note="computed by diffusers' attention layers; dfs records and draws softmax(QKᵀ/√d) but does not "
           "re-implement it"),
    E("equation", "Fokker–Planck (App. 2, Theorem 0.1)", 263, r"\frac{\partial p(x|t)}{\partial t} = "
      r"-\frac{\partial}{\partial x} \left(f\left(x,t\right) p(x|t) \right)", COVERED,
      notebooks=((NB02, "8. Appendix 2 checked: the Fokker–Planck equation, on a grid and with particles"),),
      code=("dfs.fokker_planck.fp_solve", "dfs.fokker_planck.euler_maruyama"), figures=("02_fokker_planck",),
      note="1-D finite differences against Euler–Maruyama particle histograms; both errors fall as the grid and "
           "the particle count grow (tests/test_fokker_planck.py)"),
    E("equation", "Langevin drift (App. 2)", 307, r"f(x,t)=rac{1}{2}rac{\partial}{\partial x}\log p(x|t).", PARTLY,
      notebooks=((NB02, "7. Langevin dynamics"),), code=("dfs.toy.langevin", "dfs.toy.mixture_score"),
      note="Langevin sampling of a fixed target p* is shown; the draft's drift uses the evolving density p(x|t)"),
    E("equation", "L_VLB (App. 3)", 333, r"\mathrm{Let} \ L_{\mathrm{VLB}}", COVERED,
      notebooks=((NB03, "1. The bound and its terms"),),
      code=("dfs.diffusion.vlb_terms", "dfs.diffusion.nll_bits_per_dim", "dfs.diffusion.prior_kl"),
      figures=("03_vlb_terms",), note="the decomposition L_T + Σ L_{t−1} + L_0, which the draft does not reach"),

    # ---- algorithms and figures -----------------------------------------------------------------------------
    E("algorithm", "Algorithm 1 (training)", 131, "Algorithm 1 Training", COVERED,
      notebooks=((NB02, "3. Training an MLP"),), code=("dfs.diffusion.loss_simple", "dfs.toy.train_toy"),
      figures=("02_training_loss",)),
    E("algorithm", "Algorithm 2 (sampling)", 131, "Algorithm 2 Sampling", COVERED,
      notebooks=((NB02, "4. Sampling"),), code=("dfs.diffusion.ddpm_sample", "dfs.diffusion.ddpm_step"),
      figures=("02_samples_ddpm_ddim",)),
    E("figure", "Fig. 1.1", 77, "Рис. 1.1. Прямой процесс диффузии [6]", COVERED,
      notebooks=((NB01, "1. The forward process"),), code=("dfs.diffusion.q_sample",),
      figures=("01_forward_astronaut",)),
    E("figure", "Fig. 1.2", 96, "Рис. 1.2. Обратный процесс диффузии [6]", COVERED,
      notebooks=((NB01, "3. The reverse process"),), code=("dfs.diffusion.ddpm_sample",),
      figures=("01_reverse_process",)),
    E("figure", "Fig. 1.3", 134, "Рис. 1.3. Алгоритмы обучения и семплирования [6]", COVERED,
      notebooks=((NB02, "3. Training an MLP"), (NB02, "4. Sampling")),
      code=("dfs.diffusion.loss_simple", "dfs.diffusion.ddpm_sample"), figures=("02_samples_ddpm_ddim",)),
    E("figure", "Fig. 1.4", 143, "Рис. 1.4. Trade-off между сжатием и соответствующими искажениями [5]", COVERED,
      notebooks=((NB03, "3a. Rate against distortion along the reverse chain"),
                 (NB06, "Rate against distortion on faces"), (NB04, "1. Rate, distortion and meaning")),
      code=("dfs.elbo_study.rate_distortion", "dfs.elbo_study.curve_knee", "dfs.swap.bound.held_out_rate_distortion",
            "dfs.swap.bound.ConditionalEps", "dfs.latent.reconstruction_quality"),
      figures=("03_rate_distortion", "06_face_rate_distortion", "04_rate_distortion"),
      note="LDM's own figure (its Fig. 2, after Ho et al. Fig. 5): rate (cumulative L_t, bits/dim) against the RMSE "
           "of x̂_0 along the reverse chain of notebook 03's L_simple pixel model on held-out 8×8 digits, with the "
           "semantic/perceptual regions split at the curve's knee; for a face model in notebook 06: the shipped "
           "64-px swap model (conditional, bits/dim of the face region, held-out self-reconstructions; QUICK on a "
           "50-step respaced chain, FULL on all 1000 steps); next to it notebook 04's autoencoder f-sweep "
           "(PSNR/SSIM and a classifier's accuracy against f)"),
    E("figure", "Fig. 1.5", 159, "Рис. 1.5. U-Net архитектура с перекрестным вниманием", PARTLY,
      notebooks=((NB04, "3. Class-conditional latent diffusion"),),
      code=("dfs.nets.build_cond_unet", "dfs.latent.capture_cross_attention"),
      figures=("04_cross_attention_maps", "04_guidance_samples"),
      note="the conditional U-Net is built and trained, and its cross-attention maps and guided samples are drawn; "
           "the architecture itself (LDM's Fig. 3) is not drawn"),
    E("figure", "Fig. 1.6", 179, "Рис. 1.6. Первый этап FaceShifter [4]", COVERED,
      notebooks=((NB08, "The architecture, drawn from the code"),),
      code=("dfs.swap.faceshifter.AEINet", "dfs.swap.faceshifter_figures.draw_architecture"),
      figures=("08_architecture", "08_aad_masks")),
    E("figure", "Fig. 1.7", 186, "Рис. 1.7. Второй этап FaceShifter [4]", COVERED,
      notebooks=((NB08, "Swaps: sources × targets, AEI-Net and HEAR-Net"),), code=("dfs.swap.faceshifter.HEARNet",),
      figures=("08_hear_occlusions",)),

    # ---- appendices -----------------------------------------------------------------------------------------
    E("appendix", "App. 1", 234, "Явное выражение для семплирования на произвольном шаге диффузии", COVERED,
      notebooks=((NB01, "Iterating eq. (1) gives eq. (2)"), (NB01, "4. Errata")),
      code=("dfs.errata.check_merged_noise", "dfs.errata.iterated_forward_variance"),
      figures=("01_closed_form_vs_iterated",),
      note="numeric check of the Gaussian merging; the slips of l.241–249 are errata"),
    E("appendix", "App. 2", 253, "Динамика Ланжевена как стохастическая реализация уравнения Фоккера-Планка", COVERED,
      notebooks=((NB02, "7. Langevin dynamics"), (NB02, "Langevin dynamics: a fixed target, not the evolving density")),
      code=("dfs.toy.langevin", "dfs.fokker_planck.fixed_target_rhs", "dfs.fokker_planck.draft_langevin_rhs"),
      figures=("02_langevin_fokker_planck",),
      note="Fokker–Planck solved and checked against particles; Langevin with a fixed p* keeps p* stationary, while "
           "the draft's drift with the evolving density makes every density stationary (a tautology; errata)"),
    E("appendix", "App. 3", 315, "Вывод ELBO", COVERED, notebooks=((NB03, "1. The bound and its terms"),),
      code=("dfs.diffusion.vlb_terms", "dfs.diffusion.normal_kl", "dfs.diffusion.discretized_gaussian_log_likelihood"),
      note="the completed decomposition and its terms in bits/dim; the draft's derivation stops garbled (l.337)"),

    # ---- references -----------------------------------------------------------------------------------------
    E("reference", "[1]", 216, "Arjovsky M., Chintala S., Bottou L. Wasserstein GAN.", COVERED, notebooks=GAN_NB,
      code=("dfs.gan.wasserstein_critic_loss", "dfs.gan.clip_weights_", "dfs.gan.gradient_penalty"), note=GAN_NOTE),
    E("reference", "[2]", 217, "Deep Unsupervised Learning using Nonequilibrium Thermodynamics", PARTLY,
      notebooks=((NB01, "1. The forward process"),), code=("dfs.diffusion.q_step",),
      note="the forward/reverse Gaussian chain is used in DDPM's form [6]; Sohl-Dickstein's own training (their "
           "bound with learned means and variances, binomial diffusion) is not reproduced"),
    E("reference", "[3]", 218, "DreamBooth: Fine Tuning Text-to-Image Diffusion Models", COVERED,
      notebooks=((NB08B, "1. Concepts: teaching the swap one person"),),
      code=("dfs.personalize.dreambooth_loss", "dfs.personalize.ConceptModel"),
      note="the identity tokens play the rare identifier, real photos of the training people the class prior "
           "(eq. 2); " + NB08B_NOTE),
    E("reference", "[4]", 219, "FaceShifter: Towards High Fidelity And Occlusion Aware Face Swapping", COVERED,
      notebooks=((NB08, "The method"),), code=("dfs.swap.faceshifter.FaceShifterGAN", "dfs.swap.faceshifter_train"),
      note="at 64 px (the shipped quick model; its measured training time is in "
           "dfs/weights/faceshifter-quick/hear/provenance.json), not the paper's 256 px"),
    E("reference", "[5]", 220, "High-Resolution Image Synthesis with Latent Diffusion Models", COVERED,
      notebooks=((NB04, "2. Pixel vs latent diffusion"),), code=("dfs.latent.LatentDiffusion",)),
    E("reference", "[6]", 221, "Denoising Diffusion Probabilistic Models", COVERED,
      notebooks=((NB01, "1. The forward process"), (NB02, "4. Sampling")),
      code=("dfs.diffusion.loss_simple", "dfs.diffusion.ddpm_sample")),
    E("reference", "[7]", 222, "Kingma D. P., Welling M. An Introduction to Variational Autoencoders", COVERED,
      notebooks=((NB04, "1. Rate, distortion and meaning"),), code=("dfs.latent.AutoencoderWithLoss",),
      note="as LDM's KL-regularised autoencoder"),
    E("reference", "[8]", 223, "Nichol A., Dhariwal P. Improved Denoising Diffusion Probabilistic Models.", COVERED,
      notebooks=((NB03, "5. Linear vs cosine schedule"), (NB03, "6. Fewer sampling steps")),
      code=("dfs.diffusion.cosine_beta_schedule", "dfs.diffusion.loss_hybrid", "dfs.diffusion.respace")),
    E("reference", "[9]", 224, "On Convergence and Stability of GANs", COVERED, notebooks=GAN_NB,
      code=("dfs.gan.dragan_penalty",), note=GAN_NOTE + "; its modes covered are in the table 02b_gan_vs_diffusion"),
    E("reference", "[10]", 225, "Neural Discrete Representation Learning", COVERED,
      notebooks=((NB04, "1. Rate, distortion and meaning"),), code=("dfs.latent.vq_losses", "dfs.latent.quantize")),
    E("reference", "[11]", 226, "Spectral Normalization for Generative Adversarial Networks", PARTLY,
      notebooks=((NB08, "The architecture, drawn from the code"), *GAN_NB),
      code=("dfs.swap.faceshifter.PatchDiscriminator", "dfs.gan.apply_spectral_norm"),
      note="FaceShifter's discriminator uses it; on the 2-D mixtures an SN discriminator is one of the GANs "
           "measured (" + GAN_NOTE + ")"),
    E("reference", "[12]", 227, "On Catastrophic Forgetting and Mode Collapse in Generative Adversarial Networks",
      COVERED, notebooks=((NB02B, "5. Mode hopping: forgetting modes during training"),),
      code=("dfs.toy.mode_drops",), note=GAN_NOTE + "; forgetting measured as modes a generator leaves after covering them"),
    E("reference", "[13]", 228, "Unrolled Generative Adversarial Networks", COVERED, notebooks=GAN_NB,
      code=("dfs.gan.unrolled_generator_loss",), note=GAN_NOTE + "; the draft calls it 'UGAN' (l.55)"),

    # ---- tools (§1.2.1 and §2.1) ----------------------------------------------------------------------------
    E("tool", "tool: diffusers (§1.2.1)", 192, "- diffusers", COVERED, notebooks=((NB04, "2. Pixel vs latent diffusion"),),
      code=("dfs.nets.build_unet", "dfs.nets.build_cond_unet", "dfs.nets.load_pretrained"),
      note="U-Nets, autoencoders and schedulers; dfs.diffusion is checked against diffusers' schedulers"),
    E("tool", "tool: Python 3", 198, "Python 3", COVERED, code=("dfs",), note="Python ≥ 3.10"),
    E("tool", "tool: hugging-face", 198, "hugging-face", COVERED, code=("dfs.nets.load_pretrained",),
      note="the Hub through diffusers (offline: HF_HUB_OFFLINE=1); accelerate drives dfs.train"),
    E("tool", "tool: TorchPruning", 198, "TorchPruning", COVERED,
      notebooks=((NB08B, "2. Compression: structured pruning with Torch-Pruning"),),
      code=("dfs.compression.prune", "dfs.compression.prune_checkpoint", "dfs.compression.pruning_study",
            "dfs.compression.plot_pruning"), figures=("08b_pruning_curves",),
      note="structured channel pruning (pip install 'dfs[compress]') of the diffusion swap's U-Net and FaceShifter's "
           "AEI-Net with a short fine-tune (dfs prune); quick mode fine-tunes 10 steps per ratio and judges a few "
           "pairs, full mode (300 steps, 50 pairs) is not run yet"),
    E("tool", "tool: PyTorch", 200, "PyTorch", COVERED, code=("dfs.diffusion", "dfs.train.Trainer")),
    E("tool", "tool: Plotly", 200, "Plotly", COVERED, notebooks=((NB05, "3. Identity embeddings"),),
      code=("dfs.figures.save",), figures=("05_identity_embeddings",)),
    E("tool", "tool: TorchVision", 202, "TorchVision", COVERED,
      code=("dfs.swap.data.warped_references", "dfs.swap.data.identity_cosines", "dfs.latent.vgg16_perceptual"),
      note="Gaussian blur (degraded references in swap training, the blur check of identity), VGG16 of the optional "
           "perceptual loss (its weights need a download), CelebA's layout"),
    E("tool", "tool: transformers", 202, "transformers", NOT_COVERED,
      note="no text encoder is used: conditioning is by class and identity tokens, not text prompts"),
    E("tool", "tool: Matplotlib", 204, "Matplotlib", COVERED, code=("dfs.figures.save", "dfs.figures.image_grid"),
      notebooks=((NB01, "1. The forward process"),)),
    E("tool", "tool: TorchIntegral", 204, "TorchIntegral", NOT_COVERED,
      note="not on PyPI (pip finds neither torchintegral nor torch-integral; git only), so not a dependency; the "
           "compression experiments use Torch-Pruning (dfs.compression) instead"),
    E("tool", "tool: wandb", 204, "wandb", PARTLY,
      code=("dfs.train.TrainConfig", "dfs.train.Trainer.log_wandb", "dfs.train.add_wandb_argument"),
      note="optional logging (pip install 'dfs[wandb]'): --wandb PROJECT on dfs train-swap, dfs prune and dfs "
           "personalize logs losses, "
           "learning rate, sample grids and evaluation rows (offline unless WANDB_MODE says otherwise); the shipped "
           "runs did not use it"),
)


# ---- lookup and checks ---------------------------------------------------------------------------------------
def resolve(dotted: str):
    """Import ``dfs.module.attr.attr`` and return the object; ImportError/AttributeError say which part failed."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as e:
            if e.name and not ".".join(parts[:i]).startswith(e.name):
                raise   # a missing dependency inside an existing module
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                raise AttributeError(f"{dotted}: {'.'.join(parts[:i])} has no {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"{dotted}: no importable module")


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def notebook_headings(stem: str, notebooks_dir: str | os.PathLike | None = None) -> list[str]:
    """The Markdown headings of ``notebooks/<stem>.ipynb`` (text without the ``#``)."""
    import nbformat

    path = Path(notebooks_dir or Path(repo_root()) / "notebooks") / f"{stem}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"no notebook {path}")
    nb = nbformat.read(path, as_version=4)
    return [m.group(1) for c in nb.cells if c.cell_type == "markdown"
            for line in c.source.splitlines() if (m := _HEADING.match(line))]


def notebook_source(stem: str, notebooks_dir: str | os.PathLike | None = None) -> str:
    import nbformat

    path = Path(notebooks_dir or Path(repo_root()) / "notebooks") / f"{stem}.ipynb"
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")


def check_entry(entry: Entry, lines: list[str] | None = None, notebooks_dir=None) -> list[str]:
    """What is wrong with one entry (empty list: nothing): the quote not on its line of the draft (when ``lines``
    is given), a dfs object that does not import, a notebook or heading that does not exist, a figure name that
    the notebook never saves."""
    problems = []
    if lines is not None:
        if entry.line > len(lines):
            problems.append(f"line {entry.line} is past the draft's end ({len(lines)} lines)")
        elif entry.quote not in lines[entry.line - 1]:
            problems.append(f"quote {entry.quote!r} is not on line {entry.line}")
    for dotted in entry.code:
        try:
            resolve(dotted)
        except (ImportError, AttributeError) as e:
            problems.append(f"{dotted} does not import ({e})")
    stems = {stem for stem, _ in entry.notebooks}
    for stem, heading in entry.notebooks:
        try:
            heads = notebook_headings(stem, notebooks_dir)
        except FileNotFoundError as e:
            problems.append(str(e))
            continue
        if not any(h.startswith(heading) for h in heads):
            problems.append(f"{stem} has no heading starting {heading!r}")
    for fig in entry.figures:
        if not any(f'"{fig}"' in _safe_source(s, notebooks_dir) for s in stems):
            problems.append(f"figure {fig!r} is not saved by {sorted(stems)}")
    return problems


def _safe_source(stem, notebooks_dir) -> str:
    try:
        return notebook_source(stem, notebooks_dir)
    except FileNotFoundError:
        return ""


def check_all(entries=ENTRIES, draft: str | os.PathLike | None = None, notebooks_dir=None) -> dict:
    """Check every entry; returns ``{"draft": path or None, "problems": {label: [...]}}`` (quotes are checked only
    when the draft is found)."""
    try:
        lines, where = draft_lines(draft), str(Path(draft) if draft else draft_path())
    except FileNotFoundError:
        lines, where = None, None
    problems = {}
    for e in entries:
        p = check_entry(e, lines, notebooks_dir)
        if p:
            problems[f"{e.label} (l.{e.line})"] = p
    return {"draft": where, "problems": problems}


# ---- views ---------------------------------------------------------------------------------------------------
def coverage(entries=ENTRIES) -> dict[str, Counter]:
    """Counts of each status per kind."""
    out: dict[str, Counter] = {k: Counter() for k in KINDS}
    for e in entries:
        out[e.kind][e.status] += 1
    return {k: c for k, c in out.items() if c}


def where_text(entry: Entry) -> str:
    parts = [f"{stem} › {heading}" for stem, heading in entry.notebooks]
    parts += [f"`{c}`" for c in entry.code]
    return "; ".join(parts) or "—"


def as_rows(entries=ENTRIES) -> list[dict]:
    """One dict per entry: what the draft has, where it is made real, status and note (for a table)."""
    return [{"draft": e.label, "line": e.line, "quote": e.quote, "where": where_text(e), "status": e.status,
             "note": e.note} for e in entries]


def to_markdown(entries=ENTRIES, kind: str | None = None) -> str:
    """A Markdown table of the entries (of one ``kind`` when given)."""
    chosen = [e for e in entries if kind is None or e.kind == kind]

    def cell(s) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| draft | line | quote | where | status | note |", "|---|---|---|---|---|---|"]
    for r in as_rows(chosen):
        quote = r["quote"] if len(r["quote"]) <= 70 else r["quote"][:67] + "…"
        lines.append(f"| {cell(r['draft'])} | {r['line']} | {cell(quote)} | {cell(r['where'])} | "
                     f"**{r['status']}** | {cell(r['note'])} |")
    return "\n".join(lines) + "\n"


def not_covered(entries=ENTRIES) -> list[Entry]:
    """The entries that are not (fully) covered: notebook 09's further work."""
    return [e for e in entries if e.status != COVERED]


def plot_coverage(entries=ENTRIES):
    """Stacked horizontal bars: how many entries of each kind are covered, partly covered, not covered."""
    import matplotlib.pyplot as plt

    cov = coverage(entries)
    kinds = list(cov)
    colours = {COVERED: "tab:green", PARTLY: "tab:orange", NOT_COVERED: "tab:red"}
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(kinds) + 1.2))
    left = [0] * len(kinds)
    for status in STATUSES:
        n = [cov[k][status] for k in kinds]
        ax.barh([lbl(k) for k in kinds], n, left=left, color=colours[status], label=lbl(status))
        for i, (x, w) in enumerate(zip(left, n)):
            if w:
                ax.text(x + w / 2, i, str(w), ha="center", va="center", color="white", fontsize=9)
        left = [a + b for a, b in zip(left, n)]
    ax.invert_yaxis()
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel(lbl("entries of the thesis map"))
    ax.set_title(lbl("What of the draft the project makes real ({n} entries)", n=len(entries)))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
