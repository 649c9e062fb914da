"""The one evaluation path: every swap method, on the same held-out pairs, through the same pipeline and metrics.

    report = evaluate("classical", data="../shared/data/faces", pairs=20, seed=0, out="results")
    print(report.table)          # markdown; report.summary is what results/eval_*.json holds

What happens (``dfs eval --method classical --data DIR --pairs N --seed S`` runs exactly this):

1. the photos of ``data`` (LFW's layout ``lfw_home/lfw_funneled/<person>/``, or any folder-per-identity tree) are
   split by identity with :meth:`dfs.data.faces.FaceImages.split` (``held_out``, ``split_seed``: the split the
   training code uses), and only the **held-out** people are used: at most ``max_per_identity`` photos each;
2. every such photo is detected once (dlib, 68 points); photos without a face are left out and counted;
3. their identity embeddings form the retrieval **gallery** (:class:`dfs.metrics.Gallery`);
4. ``pairs`` (source, target) pairs are drawn with ``seed``: source and target are different people, and the
   source's person has at least one other photo in the gallery (its own photo is left out when ranking);
5. each row -- the method, "source pasted" (the aligned source crop pasted through the target's mask, same
   pipeline), "target resampled" (the target's own crop at the method's size pasted back: the resolution floor of
   pose and expression errors) and "target unchanged" (the target photo itself) -- is judged on the same triples by
   :class:`dfs.metrics.SwapJudge`;
6. PSNR / SSIM have a ground truth only when a face is swapped onto itself: for the first ``self_pairs`` targets the
   method swaps the target onto itself, compared with the photo inside the face mask;
7. the ID-feature FD compares the results' identity features with the gallery's (real photos of the held-out
   people); FID / KID only when torchmetrics' Inception weights load;
8. uncertainty: every per-pair metric gets a 95 % percentile-bootstrap interval over the pairs
   (:func:`dfs.metrics.intervals`), and every row its paired difference to the ``compare`` row (default: the
   classical swap, run on the same pairs) with its interval (:func:`dfs.metrics.paired_differences`).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfs import smoke
from dfs.data.faces import load_faces
from dfs.metrics import (SwapJudge, Triple, inception_fid_kid, inception_status, intervals, paired_differences, psnr,
                         ssim, summarise)

REFERENCE_ROWS = ("source pasted", "target resampled", "target unchanged")

COLUMNS = [  # (summary key, header, format); metrics with a bootstrap interval show it as [low, high]
    ("id_top1", "ID top-1 ↑", "{:.0%}"),
    ("id_top5", "ID top-5 ↑", "{:.0%}"),
    ("face_found", "face found ↑", "{:.0%}"),
    ("id_cos_source", "ID cos to source ↑", "{:.3f}"),
    ("id_cos_target", "ID cos to target", "{:.3f}"),
    ("pose_error", "pose error (°) ↓", "{:.2f}"),
    ("expression_error", "expression error (% IOD) ↓", "{:.2f}"),
    ("psnr_self", "self-swap PSNR (dB) ↑", "{:.2f}"),
    ("ssim_self", "self-swap SSIM ↑", "{:.3f}"),
    ("id_feature_fd", "ID-feature FD ↓", "{:.4f}"),
    ("fid", "FID ↓", "{:.1f}"),
    ("seconds_per_swap", "s / swap", "{:.3f}"),
]


@dataclass
class EvalReport:
    summary: dict                          # JSON-able: settings, pairs, one dict of metrics per row
    table: str                             # markdown
    examples: list = field(default_factory=list, repr=False)   # per pair: {"source", "target", row: image}
    files: list = field(default_factory=list)


def sample_pairs(photos: dict[str, list[str]], n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` distinct (source, target) photo pairs of different people, the source's person having >= 2 photos
    (so one is left in the gallery); drawn with ``numpy.random.default_rng(seed)``."""
    people = sorted(p for p in photos if photos[p])
    sources = [p for p in people if len(photos[p]) >= 2]
    possible = sum(len(photos[s]) * sum(len(photos[t]) for t in people if t != s) for s in sources)
    if not sources or len(people) < 2:
        raise ValueError(f"need >= 2 held-out people with a detected face, one of them with >= 2 photos; got "
                         f"{ {p: len(photos[p]) for p in people} } (hold out more identities: --held-out)")
    if n > possible:
        raise ValueError(f"asked for {n} pairs but the held-out photos allow only {possible} distinct pairs")
    rng = np.random.default_rng(seed)
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    while len(pairs) < n:
        s = sources[rng.integers(len(sources))]
        t = [p for p in people if p != s][rng.integers(len(people) - 1)]
        pair = (photos[s][rng.integers(len(photos[s]))], photos[t][rng.integers(len(photos[t]))])
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs


def _photo_mask(target) -> np.ndarray:
    """The target's soft face mask in photo coordinates."""
    import cv2
    H, W = target.image.shape[:2]
    return cv2.warpAffine(target.mask, np.asarray(target.matrix, np.float64), (W, H),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)


def self_swap_scores(result_image: np.ndarray, target) -> tuple[float, float]:
    """(PSNR weighted by the face mask, SSIM over the mask's bounding box) of a self-swap against the photo."""
    m = _photo_mask(target)
    ys, xs = np.nonzero(m > 0.5)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return psnr(result_image, target.image, mask=m), ssim(result_image[box], target.image[box])


def format_value(v, f: str = "{:.2f}") -> str:
    """``f.format(v)``, or "–" for a metric that was not measured (None: e.g. no face found in any result)."""
    return _fmt(v, f)


def _fmt(v, f: str) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and np.isinf(v):
        return "∞"
    return f.format(v)


INTERVAL_COLUMNS = ("id_top1", "id_cos_source", "pose_error", "expression_error")


def markdown_table(summary: dict) -> str:
    """The rows of a summary as a markdown table (95 % bootstrap intervals in brackets), the paired differences to
    the comparison row, and what the numbers are measured on."""
    rows, ci = summary["rows"], summary.get("intervals", {})
    cols = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows.values())]
    lines = ["| method | " + " | ".join(h for _, h, _ in cols) + " |",
             "|---|" + "---|" * len(cols)]

    def cell(name, k, f):
        v, iv = rows[name].get(k), ci.get(name, {}).get(k)
        if v is None or iv is None or k not in INTERVAL_COLUMNS:
            return _fmt(v, f)
        return f"{_fmt(v, f)} [{_fmt(iv[0], f)}, {_fmt(iv[1], f)}]"

    for name in rows:
        lines.append(f"| {name} | " + " | ".join(cell(name, k, f) for k, _, f in cols) + " |")
    diffs, ref = summary.get("differences", {}), summary.get("compare")
    if diffs:
        fmt = dict((k, f) for k, _, f in COLUMNS)
        heads = [k for k in ("id_top1", "id_cos_source", "pose_error", "expression_error", "face_found")
                 if any(k in d for d in diffs.values())]
        lines += ["", f"Paired differences to **{ref}** on the same pairs (mean [95 % bootstrap interval]):", "",
                  "| method | " + " | ".join(dict((k, h) for k, h, _ in COLUMNS)[k] for k in heads) + " |",
                  "|---|" + "---|" * len(heads)]
        for name, d in diffs.items():
            f = {k: ("{:+.0%}" if fmt[k].endswith("%}") else "{:+.3f}" if "3f" in fmt[k] else "{:+.2f}")
                 for k in heads}
            lines.append(f"| {name} | " + " | ".join(
                "–" if k not in d else f"{f[k].format(d[k]['mean'])} [{f[k].format(d[k]['low'])}, "
                f"{f[k].format(d[k]['high'])}]" for k in heads) + " |")
    s = summary["settings"]
    notes = [
        f"{summary['n_pairs']} pairs (source ≠ target person) drawn with seed {s['seed']} from "
        f"{len(summary['gallery_people'])} held-out identities ({summary['gallery_photos']} gallery photos) of "
        f"{s['data']}; identity encoder {s['encoder']}.",
        "ID top-k: the source's identity among the k nearest gallery identities (own photos left out). Pose error: "
        "L2 norm of the (yaw, pitch, roll) differences to the target; expression error: NME of the inner 51 "
        "landmarks after a similarity alignment, % of the outer-eye-corner distance.",
        f"Self-swap PSNR / SSIM: the method swapping {s['self_pairs']} targets onto themselves, inside the face mask.",
        "ID-feature FD: Fréchet distance between identity-encoder features of the results and of the gallery photos "
        "— not FID (other features, few samples); compare it only between rows of this table.",
        f"s / swap: swap + blend + paste back per pair (detection excluded) on {s['device']}.",
    ]
    if not summary["inception"]["available"]:
        notes.append(f"FID/KID not computed: {summary['inception']['reason']}.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def evaluate(method="classical", data: str | os.PathLike | None = None, pairs: int = 20, seed: int = 0,
             out: str | os.PathLike | None = None, held_out: float | int = 0.2, split_seed: int = 0,
             max_per_identity: int = 10, self_pairs: int | None = None, encoder=None, analyzer=None,
             method_options: dict | None = None, progress: bool = True, keep_examples: bool = True,
             compare: str | None = "classical", n_boot: int = 2000, references: bool = True,
             command: str | None = None) -> EvalReport:
    """Evaluate a swap method (a registered name or a :class:`~dfs.swap.pipeline.SwapMethod`); see the module
    docstring.  ``out``: a folder for ``eval_<method>_n<pairs>_s<seed>.json`` and ``.md`` (None: no files).
    ``compare``: a registered method run on the same pairs as a row of its own, against which every row's paired
    differences are computed (None: no comparison row, no differences).  ``references=False`` leaves out the
    reference rows (a sweep over a method's settings).  ``command``: how this was run, kept in the JSON."""
    from tqdm.auto import tqdm

    from dfs.device import describe_device
    from dfs.faces.detect import FaceAnalyzer, FaceNotFoundError
    from dfs.faces.images import BadImageError, load_image
    from dfs.paths import data_dir
    from dfs.swap import get_method
    from dfs.swap.pipeline import SourcePasted, SwapPipeline, TargetResampled

    if not isinstance(pairs, int) or pairs < 1:
        raise ValueError(f"pairs must be a positive integer, got {pairs!r}")
    if not isinstance(max_per_identity, int) or max_per_identity < 2:
        raise ValueError(f"max_per_identity must be an integer >= 2 (a source needs a second gallery photo), "
                         f"got {max_per_identity!r}")
    self_pairs = min(pairs, 10) if self_pairs is None else int(self_pairs)
    if self_pairs < 0:
        raise ValueError(f"self_pairs must be >= 0, got {self_pairs}")
    # DFS_SMOKE=1 (dfs.smoke): a couple of pairs and a small gallery, every row and metric still computed
    pairs, self_pairs = smoke.cap(pairs, "max_eval_pairs"), smoke.cap(self_pairs, "max_eval_pairs")
    max_per_identity = smoke.cap(max_per_identity, "max_per_identity")
    swap_method = get_method(method, **(method_options or {})) if isinstance(method, str) else method
    analyzer = analyzer or FaceAnalyzer()
    pipe = SwapPipeline(swap_method, analyzer=analyzer)
    pasted, resampled = (SwapPipeline(m, analyzer=analyzer, crop_size=pipe.crop_size, template=pipe.template,
                                      mask_feather=pipe.mask_feather, mask_dilate=pipe.mask_dilate)
                         for m in (SourcePasted(), TargetResampled()))

    # 1-2: held-out photos, detected once
    dataset = load_faces(data)
    _, held = dataset.split(held_out, split_seed)
    t0 = time.perf_counter()
    detected, no_face = {}, []
    photos: dict[str, list[str]] = {}
    todo = [(person, str(p)) for person, paths in held.by_identity().items() for p in paths[:max_per_identity]]
    for person, key in tqdm(todo, desc="detect held-out faces", disable=not progress):
        try:
            image = load_image(key)
            detected[key] = (person, image, analyzer.largest(image, name=key))
            photos.setdefault(person, []).append(key)
        except (FaceNotFoundError, BadImageError) as e:
            no_face.append((key, str(e)))
    detect_seconds = (time.perf_counter() - t0) / max(len(todo), 1)

    # 3: the gallery
    judge = SwapJudge(encoder=encoder, analyzer=analyzer)
    keys = sorted(detected)
    emb = judge.build_gallery([(k, *detected[k]) for k in keys]).embeddings

    # 4: pairs, aligned for the method's crop
    chosen = sample_pairs(photos, pairs, seed)
    aligned = {k: pipe.align(detected[k][1], name=k, face=detected[k][2]) for k in {k for p in chosen for k in p}}
    sources, targets = [aligned[s] for s, _ in chosen], [aligned[t] for _, t in chosen]

    # 5: the rows
    rows: dict[str, dict] = {}
    per_pair: dict[str, list] = {}
    results_by_row: dict[str, list[np.ndarray]] = {}
    reference_rows = dict(zip(REFERENCE_ROWS, (pasted, resampled, None)))
    runs = [(swap_method.name, pipe)]
    if compare and compare != swap_method.name:
        runs.append((compare, SwapPipeline(get_method(compare), analyzer=analyzer)))
    runs += [(n, p) for n, p in reference_rows.items() if n != swap_method.name and references]
    scores_by_row: dict[str, list] = {}
    for name, p in runs:
        if p is None:
            images, secs = [t.image for t in targets], [0.0] * len(targets)
        else:
            src, tgt = sources, targets
            if (p.crop_size, p.template) != (pipe.crop_size, pipe.template):   # the comparison method's own crops
                again = {k: p.align(detected[k][1], name=k, face=detected[k][2]) for k in {k for q in chosen for k in q}}
                src, tgt = [again[s] for s, _ in chosen], [again[t] for _, t in chosen]
            p.run(src[:1], tgt[:1], seed=seed)  # warm-up (imports, first-call set-up): not timed
            res = p.run(src, tgt, seed=seed)
            images, secs = [r.image for r in res], [r.seconds for r in res]
        scores = [judge.triple(Triple(s.image, t.image, im, s.face, t.face, detected[sk][0], sk, tk,
                                      detected[tk][0]))
                  for (sk, tk), s, t, im in zip(chosen, sources, targets, images)]
        row = summarise(scores, real_embeddings=emb)
        row["face_found"] = float(np.mean([s.result_face_found for s in scores]))
        scores_by_row[name] = scores
        row["seconds_per_swap"] = float(np.mean(secs)) if p is not None else None
        row["psnr_self"] = row["ssim_self"] = None
        if p is pipe and self_pairs:
            selfs = pipe.run(targets[:self_pairs], targets[:self_pairs], seed=seed)
            ps, ss = zip(*(self_swap_scores(r.image, t) for r, t in zip(selfs, targets)))
            row["psnr_self"], row["ssim_self"] = float(np.mean(ps)), float(np.mean(ss))
        fk = inception_fid_kid([detected[k][1] for k in keys], images)
        row.update(fk or {"fid": None, "kid": None})
        rows[name] = row
        per_pair[name] = [{k: v for k, v in vars(s).items() if k != "result_embedding"} for s in scores]
        results_by_row[name] = images

    ok, reason = inception_status()
    summary = {
        "command": command,
        "settings": {"method": swap_method.name, "checkpoint": str(getattr(swap_method, "checkpoint", None)),
                     "data": str(Path(data) if data is not None else data_dir()),
                     "pairs": pairs, "seed": seed, "held_out": held_out, "split_seed": split_seed,
                     "max_per_identity": max_per_identity, "self_pairs": self_pairs,
                     "crop_size": pipe.crop_size, "template": pipe.template, "encoder": judge.embedder.name,
                     "analyzer": analyzer.settings(), "device": describe_device()},
        "n_pairs": len(chosen),
        "pairs": [{"source": s, "target": t} for s, t in chosen],
        "gallery_people": judge.gallery.people,
        "gallery_photos": len(keys),
        "photos_without_face": no_face,
        "detect_seconds_per_photo": detect_seconds,
        "inception": {"available": ok, "reason": reason},
        "rows": rows,
        "intervals": {n: intervals(sc, n_boot=n_boot, seed=seed) for n, sc in scores_by_row.items()},
        "compare": compare if compare in scores_by_row else None,
        "differences": ({n: paired_differences(sc, scores_by_row[compare], n_boot=n_boot, seed=seed)
                         for n, sc in scores_by_row.items() if n != compare} if compare in scores_by_row else {}),
        "per_pair": per_pair,
    }
    report = EvalReport(summary, markdown_table(summary))
    if keep_examples:
        report.examples = [{"source": s.image, "target": t.image, **{n: results_by_row[n][i] for n in rows}}
                           for i, (s, t) in enumerate(zip(sources, targets))]
    if out is not None:
        report.files = write_report(report, out)
    return report


def write_report(report: EvalReport, out: str | os.PathLike) -> list[Path]:
    """``<out>/eval_<method>_n<pairs>_s<seed>.json`` and ``.md``."""
    s = report.summary["settings"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"eval_{s['method'].replace(' ', '-')}_n{s['pairs']}_s{s['seed']}"

    def clean(v):
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v

    js, md = out / f"{stem}.json", out / f"{stem}.md"
    js.write_text(json.dumps(clean(report.summary), indent=1, allow_nan=False) + "\n")
    md.write_text(f"# dfs eval: {s['method']}\n\n{report.table}")
    return [js, md]
