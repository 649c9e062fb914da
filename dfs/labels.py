"""Figure text in English (the default) or in Russian, for the thesis written in Russian: ``DFS_LANG=ru``.

Every title, axis label, legend entry and note that the package or a notebook draws goes through :func:`lbl`::

    ax.set_title(lbl("step {step}", step=step))      # "step 500", or "шаг 500" under DFS_LANG=ru

The English text is the key of :data:`RUSSIAN`, the one catalogue of translations. A key is a ``str.format``
template: numbers are passed as keyword values and formatted identically in both languages, and a literal brace
(TeX's ``$x_{0}$``) is written doubled, ``$x_{{0}}$``. Numbers, units and mathematics stay as they are; the
Russian words follow the thesis draft (прямой / обратный процесс, шаг, семпл, шум, лосс, энкодер, латентный,
перекрестное внимание, целевое лицо, личность).

``DFS_LANG`` is read at every call, so it can be changed between figures. Unset, empty or ``en``: English.
``ru``: Russian. Anything else is an error (a ValueError naming the value), raised already by
:func:`dfs.notebook.setup` so that a notebook stops before it computes anything. A text that has no Russian yet is
drawn in English with a :class:`MissingTranslation` warning (the tests keep the catalogue complete).
Matplotlib's default font, DejaVu Sans, has the Cyrillic glyphs.
"""
from __future__ import annotations

import os
import warnings

LANGUAGES = ("en", "ru")


class MissingTranslation(UserWarning):
    """A figure text that :data:`RUSSIAN` does not translate; it is drawn in English."""


def language() -> str:
    """The figure language from ``DFS_LANG``: ``"en"`` (unset, empty or ``en``) or ``"ru"``; else a ValueError."""
    raw = os.environ.get("DFS_LANG", "")
    value = raw.strip().lower()
    if value in ("", "en"):
        return "en"
    if value == "ru":
        return "ru"
    raise ValueError(f"DFS_LANG={raw!r} is not a figure language dfs knows: set DFS_LANG=ru for Russian figure text, "
                     "or unset it (or DFS_LANG=en) for English")


def lbl(text: str, **values) -> str:
    """The figure text ``text`` (an English ``str.format`` template, a key of :data:`RUSSIAN`) in the language of
    ``DFS_LANG``, formatted with ``values``."""
    template = text
    if language() == "ru":
        if text in RUSSIAN:
            template = RUSSIAN[text]
        else:
            warnings.warn(f"no Russian for the figure text {text!r}: add it to RUSSIAN in dfs/labels.py; "
                          "it is drawn in English", MissingTranslation, stacklevel=2)
    return template.format(**values)


# English template -> Russian template, grouped by where it is drawn.
RUSSIAN: dict[str, str] = {
    # ---- shared words: image columns, schedules, methods -------------------------------------------------------
    "source": "исходное",
    "target": "целевое",
    "result": "результат",
    "classical": "классическая",
    "diffusion": "диффузионная",
    "step": "шаг",
    "training step": "шаг обучения",
    "density": "плотность",
    "linear": "линейное",
    "cosine": "косинусное",
    "ID cosine to source ↑": "косинус личности с исходным ↑",
    "pose error (°) ↓": "ошибка позы (°) ↓",
    # ---- dfs.exercises.figures ---------------------------------------------------------------------------------
    "x_0 (swiss roll)": "x_0 (швейцарский рулет)",
    "x_t at t = {t} ({schedule})": "x_t при t = {t} ({schedule})",
    "t (0-based)": "t (отсчёт с 0)",
    "Ho et al. (T = 1000)": "Ho и др. (T = 1000)",
    "cosine (T = {T})": "косинусное (T = {T})",
    "linear for SNR(T) = 1e{e:g}: β_T = {beta:.3g}": "линейное для SNR(T) = 1e{e:g}: β_T = {beta:.3g}",
    "samples of p (exact)": "семплы p (точные)",
    "Langevin: δ = {delta:g}, {n} steps": "Ланжевен: δ = {delta:g}, шагов: {n}",
    "pixel level x ∈ [−1, 1]": "уровень пикселя x ∈ [−1, 1]",
    "guided, y = {y}": "с управлением, y = {y}",
    "guidance scale s = {s:g}: {percent:.0f} % in class {y}, spread {spread:.2f}":
        "масштаб управления s = {s:g}: {percent:.0f} % в классе {y}, разброс {spread:.2f}",
    # ---- dfs.gan_figures (notebook 02b) ------------------------------------------------------------------------
    "8 Gaussians (ring)": "8 гауссиан (кольцо)",
    "5×5 grid": "сетка 5×5",
    "step {step}": "шаг {step}",
    "held-out data": "отложенные данные",
    "diffusion\n(final)": "диффузия\n(итог)",
    "{data}: GAN samples over generator steps (seed 0) and the diffusion reference":
        "{data}: семплы GAN по шагам генератора (сид 0)\nи диффузионная модель для сравнения",
    "generator step": "шаг генератора",
    "modes covered": "покрытые моды",
    "high-quality fraction\n(within 3σ of a mode)": "доля качественных точек\n(не дальше 3σ от моды)",
    "E‖∇ₓD(x)‖ at x = G(z)": "E‖∇ₓD(x)‖ при x = G(z)",
    "diffusion, DDPM {T} (end)": "диффузия, DDPM {T} (конец)",
    "all {k} modes / data": "все {k} мод / данные",
    "{data}: mean over {seeds} seeds, band = range over seeds":
        "{data}: среднее по {seeds} сидам, полоса = размах по сидам",
    "{n} drop": "выпадений моды: {n}",
    "{n} drops": "выпадений моды: {n}",
    "mode index": "номер моды",
    "{data}: covered modes over training (seed {seed})": "{data}: покрытые моды в ходе обучения (сид {seed})",
    # ---- dfs.thesis_map.plot_coverage (notebook 00) ------------------------------------------------------------
    "covered": "покрыто",
    "partly": "частично",
    "not covered": "не покрыто",
    "section": "раздел",
    "equation": "формула",
    "figure": "рисунок",
    "algorithm": "алгоритм",
    "appendix": "приложение",
    "reference": "источник",
    "tool": "инструмент",
    "entries of the thesis map": "записи карты диссертации",
    "What of the draft the project makes real ({n} entries)": "Что из черновика воплощено в проекте (записей: {n})",
    # ---- dfs.results_chapter.plot_differences (notebook 09) ----------------------------------------------------
    "ID top-1": "top-1\nличности",
    "ID cos to source": "cos личности\nс исходным",
    "pose error (°)": "ошибка\nпозы (°)",
    "expression error (% IOD)": "ошибка мимики\n(% IOD)",
    "face found": "лицо\nнайдено",
    "Δ {metric}\n(higher is better)": "Δ {metric}\n(больше — лучше)",
    "Δ {metric}\n(lower is better)": "Δ {metric}\n(меньше — лучше)",
    "no dfs eval report\nwith paired differences": "нет отчёта dfs eval\nс парными разностями",
    "the comparison row": "строка сравнения",
    "Paired difference to the {ref} swap (mean, 95 % bootstrap interval; green: better, red: worse, "
    "grey: inconclusive)":
        "Парная разность с заменой «{ref}» (среднее, 95 % бутстреп-интервал; зелёный: лучше, красный: хуже, "
        "серый: не определено)",
    # ---- dfs.swap.faceshifter_figures (notebook 08) ------------------------------------------------------------
    "target $X_t$ (3×S×S)": "целевое $X_t$ (3×S×S)",
    "AAD ResBlk {level}: {h_in}→{h_out}\n{kparams:.0f}k params":
        "AAD ResBlk {level}: {h_in}→{h_out}\n{kparams:.0f}k параметров",
    "attributes encoder\n(U-Net decoder outputs)": "энкодер атрибутов\n(выходы декодера U-Net)",
    "AAD generator (×2 upsampling\nbetween levels, tanh at the end)":
        "генератор AAD (повышение разрешения ×2\nмежду уровнями, tanh в конце)",
    "$\\hat Y_{{s,t}}$ = output of the last block": "$\\hat Y_{{s,t}}$ = выход последнего блока",
    # ---- notebook 01 -------------------------------------------------------------------------------------------
    "signal kept": "сохранённый сигнал",
    "signal-to-noise ratio": "отношение сигнал/шум",
    "iterated eq. (1)": "итерации формулы (1)",
    "closed form eq. (2)": "явная формула (2)",
    "exact density": "точная плотность",
    "Bayes' rule on a grid": "формула Байеса на сетке",
    "eq. (4)": "формула (4)",
    "draft's μ̃ (l.107)": "μ̃ черновика (строка 107)",
    "forward: $x_{{{t}}}$": "прямой процесс: $x_{{{t}}}$",
    "forward: $x_{{{t}}}$ (data)": "прямой процесс: $x_{{{t}}}$ (данные)",
    "reverse: $x_{{{t}}}$": "обратный процесс: $x_{{{t}}}$",
    "reverse: $x_{{{t}}}$ (output)": "обратный процесс: $x_{{{t}}}$ (выход)",
    # ---- notebook 02 -------------------------------------------------------------------------------------------
    "MLP on {data}": "MLP на {data}",
    "exact ε* on gmm (floor)": "точное ε* на gmm (нижняя граница)",
    "L_simple (mean of 50 steps)": "L_simple (среднее по 50 шагам)",
    "{data}: data": "{data}: данные",
    "DDPM, 1000 steps": "DDPM, 1000 шагов",
    "DDIM, 50 steps": "DDIM, 50 шагов",
    "exact ∇log q_t": "точная ∇log q_t",
    "learned s_θ": "обученная s_θ",
    "L*(t): loss of the exact ε*": "L*(t): лосс точного ε*",
    "excess of the MLP: E‖ε_θ − ε*‖²/D": "избыток MLP: E‖ε_θ − ε*‖²/D",
    "per-dimension MSE": "MSE на одно измерение",
    "GMM samples (start)": "семплы GMM (начало)",
    "after {n} Langevin steps": "после {n} шагов Ланжевена",
    "two modes 0.8/0.2: plain, from N(0, I)": "две моды 0.8/0.2: обычная, из N(0, I)",
    "two modes 0.8/0.2: annealed": "две моды 0.8/0.2: с отжигом",
    "Fokker–Planck, t = {t:g}": "Фоккер–Планк, t = {t:g}",
    "{n} particles, t = {t:g}": "{n} частиц, t = {t:g}",
    "grid: L1 vs cell width h": "сетка: L1 от ширины ячейки h",
    "particles: L1 vs N (top axis)": "частицы: L1 от N (верхняя ось)",
    "particles N": "число частиц N",
    "cell width h": "ширина ячейки h",
    "L1 distance": "расстояние L1",
    "errors fall with the grid and the particles": "ошибки убывают с сеткой и числом частиц",
    "target p*": "целевое p*",
    "start p_0 (the draft's equation keeps it for ever)": "начальное p_0 (уравнение черновика оставляет его навсегда)",
    "fixed-p* Langevin from p_0, t = {t:g}": "Ланжевен с фиксированным p* из p_0, t = {t:g}",
    "8000 particles, t = 8": "8000 частиц, t = 8",
    "Langevin towards a fixed p*": "Ланжевен к фиксированному p*",
    "fixed p*, from p_0": "фиксированное p*, из p_0",
    "fixed p*, from p* (discretisation level)": "фиксированное p*, из p* (уровень дискретизации)",
    "draft's equation from p_0: ∂p/∂t = 0, stays at p_0": "уравнение черновика из p_0: ∂p/∂t = 0, остаётся p_0",
    "distance to the target": "расстояние до целевого",
    # ---- notebook 03 -------------------------------------------------------------------------------------------
    "t / T (t = 0: the decoder term L_0)": "t / T (t = 0: член декодера L_0)",
    "term of the bound (bits/dim)": "член границы (bits/dim)",
    "Terms of the variational bound, held-out digits": "Члены вариационной границы, отложенные цифры",
    "this model, held-out digits": "эта модель, отложенные цифры",
    "x̂₀ = mean training digit": "x̂₀ = средняя обучающая цифра",
    "semantic compression\nfirst {share:.0%} of the bits:\nRMSE {d0:.0f} → {dk:.0f}":
        "семантическое сжатие\nпервые {share:.0%} бит:\nRMSE {d0:.0f} → {dk:.0f}",
    "perceptual compression\nlast {share:.0%} of the bits:\nRMSE {dk:.0f} → 0":
        "перцептивное сжатие\nпоследние {share:.0%} бит:\nRMSE {dk:.0f} → 0",
    "rate R(t): bits/dim paid so far (cumulative L_t)": "скорость R(t): bits/dim, потраченные до t (накопленное L_t)",
    "distortion: RMSE of x̂₀ (0–255)": "искажение: RMSE x̂₀ (0–255)",
    "Rate vs distortion along the reverse chain (LDM Fig. 2)":
        "Скорость и искажение вдоль обратного процесса (LDM, рис. 2)",
    "x̂₀ predicted from x_t (t = 0: the digit itself)": "x̂₀, предсказанное по x_t (t = 0: сама цифра)",
    "training step (L_hybrid model)": "шаг обучения (модель L_hybrid)",
    "gradient noise scale B": "масштаб шума градиента B",
    "Gradient noise per objective": "Шум градиента для каждой целевой функции",
    "ᾱ_t for T = {T}": "ᾱ_t при T = {T}",
    "DDPM learned Σ (L_hybrid)": "DDPM обучаемая Σ (L_hybrid)",
    "training digits (floor)": "обучающие цифры (нижняя граница)",
    "sampling steps K": "шаги семплирования K",
    "MMD² to held-out digits": "MMD² до отложенных цифр",
    "Sample quality vs number of steps": "Качество семплов в зависимости от числа шагов",
    # ---- notebook 04 -------------------------------------------------------------------------------------------
    "real digits (95% CI)": "реальные цифры (95% ДИ)",
    "PSNR (dB) ↑ — distortion": "PSNR (dB) ↑ — искажение",
    "SSIM ↑ — distortion": "SSIM ↑ — искажение",
    "classifier accuracy ↑ — meaning": "точность классификатора ↑ — смысл",
    "downsampling factor f (latent: 4·(32/f)² numbers)": "фактор уменьшения f (латент: 4·(32/f)² чисел)",
    "Distortion (PSNR, SSIM) and meaning (a digit classifier on the reconstructions) against f, {n} test digits":
        "Искажение (PSNR, SSIM) и смысл (классификатор цифр на реконструкциях) в зависимости от f, тестовых "
        "цифр: {n}",
    "input": "вход",
    "{name}\n(read {acc:.0%})": "{name}\n(распознано {acc:.0%})",
    "Reconstructions D(E(x)) of test digits (in brackets: the classifier's accuracy on all 297)":
        "Реконструкции D(E(x)) тестовых цифр (в скобках: точность классификатора на всех 297)",
    "pixel": "пиксельная",
    "latent": "латентная",
    "{name}: {steps} training steps, digit FD {fd:.2f} (real floor {floor:.2f}), classifier confidence {conf:.2f}":
        "{name}: шагов обучения {steps}, FD цифр {fd:.2f} (уровень реальных {floor:.2f}), уверенность "
        "классификатора {conf:.2f}",
    "Unconditional samples (DDIM, {steps} steps); training time ≈ steps × this run's time per step: "
    "pixel {pixel:.0f} s, latent {latent:.0f} s":
        "Безусловные семплы (DDIM, шагов: {steps});\nвремя обучения ≈ шаги × время шага в этом запуске: "
        "пиксельная {pixel:.0f} s, латентная {latent:.0f} s",
    "Class-conditional latent samples (columns: requested digit; rows: guidance scale, in brackets the share of "
    "{n} samples read as their class)":
        "Латентные семплы с условием на класс (столбцы: запрошенная цифра;\nстроки: масштаб управления, в скобках "
        "доля из {n} семплов, распознанных как свой класс)",
    "token {k}": "токен {k}",
    "sample": "семпл",
    "Cross-attention: share of each latent position's attention on each condition token (colour range "
    "{lo:.3f}–{hi:.3f}; uniform would be 0.25)":
        "Перекрестное внимание: доля внимания каждой латентной позиции на каждый токен условия\n(диапазон цвета "
        "{lo:.3f}–{hi:.3f}; при равномерном было бы 0.25)",
    # ---- notebook 05 -------------------------------------------------------------------------------------------
    "{i}: yaw {yaw:.0f}°, pitch {pitch:.0f}°, roll {roll:.0f}°":
        "{i}: рыскание {yaw:.0f}°,\nтангаж {pitch:.0f}°, крен {roll:.0f}°",
    "FFHQ 256 + landmarks": "FFHQ 256 + ключевые точки",
    "soft mask": "мягкая маска",
    "|paste-back − photo|": "|вставка − фото|",
    "dlib ResNet identity embeddings (t-SNE)": "Эмбеддинги личности dlib ResNet (t-SNE)",
    "person": "человек",
    "fold {fold} (AUC {auc:.3f})": "фолд {fold} (AUC {auc:.3f})",
    "false positive rate": "доля ложноположительных",
    "true positive rate": "доля истинноположительных",
    "LFW-subset verification, dlib ResNet": "Верификация на подмножестве LFW, dlib ResNet",
    "source + Delaunay": "исходное + Делоне",
    "warped onto target": "деформировано на целевое",
    "colour transfer": "перенос цвета",
    "Poisson blend": "смешивание Пуассона",
    "pasted back": "вставлено обратно",
    "source pasted": "вставлено исходное",
    # ---- notebook 06 -------------------------------------------------------------------------------------------
    "target $x_0$": "целевое $x_0$",
    "reference $r$ (degraded)": "референс $r$ (ухудшенный)",
    "masked target": "целевое с маской",
    "heatmaps": "тепловые карты",
    "shipped run": "поставляемый запуск",
    "live steps above": "шаги, сделанные выше",
    "denoising MSE ($x_0$)": "MSE шумоподавления ($x_0$)",
    "identity loss (weighted)": "лосс личности (взвешенный)",
    "reference (warp)": "референс (деформация)",
    "swap s={s:g}": "замена s={s:g}",
    # ---- notebook 06: rate against distortion on faces ---------------------------------------------------------
    " (drawn)": " (на графике)",
    "rate R(t): bits/dim of the face paid so far": "скорость R(t): бит/изм. лица, оплаченные к шагу t",
    "distortion: RMSE of x̂₀ (0–255)": "искажение: RMSE x̂₀ (0–255)",
    "as LDM Fig. 2 draws it (linear rate)": "как на рис. 2 LDM (линейная шкала скорости)",
    "the same, log rate: the cheap first steps": "то же, лог. шкала: дешёвые первые шаги",
    "Rate vs distortion along the reverse chain, shipped face model, {n} held-out faces":
        "Скорость и искажение вдоль обратного процесса, поставляемая модель лиц, {n} отложенных лиц",
    "x̂₀ at t={t}": "x̂₀ при t={t}",
    "x₀ (t=0)": "x₀ (исходное, t=0)",
    # ---- dfs.compression.plot_pruning and dfs.personalize.personalization_grid (notebook 10) -------------------
    "{model}: parameters": "{model}: параметры",
    "{model}: MACs": "{model}: операции MAC",
    "size (relative to ratio 0)": "размер (относительно доли 0)",
    "fraction kept": "оставшаяся доля",
    "ID cosine to the source ↑ (95 % CI)": "косинус личности к исходному ↑ (95 % ДИ)",
    "pose error (°) ↓ (95 % CI)": "ошибка позы (°) ↓ (95 % ДИ)",
    "seconds per swap, 1 CPU thread": "секунд на замену, 1 поток CPU",
    "pruning ratio (channels removed per layer)": "доля прореживания (удалённых каналов слоя)",
    "{person}\n(not trained on)": "{person}\n(не из обучения)",
    "pixel reference": "пиксельный референс",
    "other source": "другое исходное",
    "other target": "другое целевое",
    "base model": "базовая модель",
    "after\nfine-tune + prior": "после\nдообучения + априорный член",
    "after\nfine-tune, no prior": "после\nдообучения без априорного члена",
    "zero-shot, 1 photo": "без обучения, 1 фото",
    "zero-shot, mean of k": "без обучения, среднее k",
    "tokens": "токены",
    "fine-tune + prior": "дообучение + априорный член",
    "fine-tune, no prior": "дообучение без априорного члена",
    "Personalisation with k = {k} photos: identity swaps (top), other people's swaps (bottom)":
        "Персонализация по k = {k} фото: замены личности (сверху), замены других людей (снизу)",
    # ---- notebooks 07 and 08 -----------------------------------------------------------------------------------
    "seconds per swap": "секунд на замену",
    "DDIM steps": "шаги DDIM",
    "AEI-Net: generator terms": "AEI-Net: члены генератора",
    "mean D(real)": "среднее D(реальные)",
    "mean D($\\hat Y$)": "среднее D($\\hat Y$)",
    "discriminator": "дискриминатор",
    "target ↓ · source →": "целевое ↓ · исходное →",
    "occluded $X_t$": "$X_t$ с окклюзией",
    "AEI-Net swap": "замена AEI-Net",
    "seconds per swap (log)": "секунд на замену (лог. шкала)",
}
