"""The embedded face sample: a few LFW photos per person copied into ``data/``, with pairs files of their own.

    python -m dfs.data.lfw_sample ../shared/data/faces data --per-identity 10

makes ``data/lfw_home/`` (what ``dfs.paths.data_dir()`` finds when ``DFS_DATA`` is unset): for every identity
folder of the source LFW tree the first ``per_identity`` photos (LFW's own bytes, renumbered without gaps like
LFW, ``<Name>_0001.jpg`` ...), and pairs files in LFW's text format drawn for this sample with a fixed seed:
``pairs.txt`` (``folds`` identity-disjoint folds of ``per_fold`` same-person and ``per_fold`` different-person
pairs), ``pairsDevTrain.txt`` / ``pairsDevTest.txt`` (identity-disjoint halves, 70 % / 30 % of the people).
A ``MANIFEST.csv`` names the original file of every copied photo.
"""
from __future__ import annotations

import argparse
import csv
import random
import shutil
from pathlib import Path

from dfs.data.faces import LFW_PAIR_FILES, folder_dataset


def draw_pairs(counts: dict[str, int], n_same: int, n_diff: int, rng: random.Random) -> list[tuple]:
    """``n_same`` distinct (name, i, j) same-person pairs (1-based i < j) and ``n_diff`` distinct
    (name1, i, name2, j) different-person pairs among ``counts`` (photos per name)."""
    names = sorted(counts)
    multi = [n for n in names if counts[n] >= 2]
    possible_same = sum(counts[n] * (counts[n] - 1) // 2 for n in multi)
    if n_same > possible_same or len(names) < 2:
        raise ValueError(f"cannot draw {n_same} same-person pairs from {len(names)} people ({possible_same} "
                         "possible) and different-person pairs from fewer than 2 people")
    same, diff = set(), set()
    while len(same) < n_same:
        name = rng.choice(multi)
        i, j = sorted(rng.sample(range(1, counts[name] + 1), 2))
        same.add((name, i, j))
    while len(diff) < n_diff:
        a, b = sorted(rng.sample(names, 2))
        diff.add((a, rng.randint(1, counts[a]), b, rng.randint(1, counts[b])))
    return sorted(same) + sorted(diff)


def write_pairs(path: Path, folds: list[list[tuple]], per_fold: int) -> None:
    """LFW's format: a header (``per_fold`` alone for one fold, ``folds per_fold`` otherwise), then per fold its
    same-person lines then its different-person lines, tab-separated."""
    header = f"{per_fold}" if len(folds) == 1 else f"{len(folds)}\t{per_fold}"
    lines = [header] + ["\t".join(str(x) for x in p) for fold in folds for p in fold]
    path.write_text("\n".join(lines) + "\n")


def make_lfw_sample(source: str | Path, out: str | Path, per_identity: int = 10, folds: int = 10,
                    per_fold: int = 20, dev_pairs: tuple[int, int] = (100, 50), seed: int = 0) -> dict:
    """Copy the sample and write its pairs files (module docstring); returns {identity: photos}."""
    src = folder_dataset(Path(source) / "lfw_home" / "lfw_funneled")
    home = Path(out) / "lfw_home"
    if home.exists():
        shutil.rmtree(home)
    (home / "lfw_funneled").mkdir(parents=True)
    counts, rows = {}, []
    for name, paths in src.by_identity().items():
        keep = paths[:per_identity]
        (home / "lfw_funneled" / name).mkdir()
        for k, p in enumerate(keep, 1):
            dst = home / "lfw_funneled" / name / f"{name}_{k:04d}{p.suffix}"
            shutil.copyfile(p, dst)
            rows.append({"identity": name, "file": str(dst.relative_to(out)), "original": p.name})
        counts[name] = len(keep)
    rng = random.Random(seed)
    names = sorted(counts)
    shuffled = names[:]
    rng.shuffle(shuffled)
    groups = [sorted(shuffled[k::folds]) for k in range(folds)]
    fold_pairs = []
    for g in groups:
        ps = draw_pairs({n: counts[n] for n in g}, per_fold, per_fold, rng)
        fold_pairs.append(ps)
    write_pairs(home / LFW_PAIR_FILES["10_folds"], fold_pairs, per_fold)
    cut = round(0.7 * len(shuffled))
    for subset, people, n in (("train", shuffled[:cut], dev_pairs[0]), ("test", shuffled[cut:], dev_pairs[1])):
        write_pairs(home / LFW_PAIR_FILES[subset], [draw_pairs({p: counts[p] for p in people}, n, n, rng)], n)
    with open(Path(out) / "MANIFEST.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["identity", "file", "original"])
        w.writeheader()
        w.writerows(rows)
    return counts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="a folder holding LFW's lfw_home/lfw_funneled/<Name>/")
    ap.add_argument("out", help="where lfw_home/ and MANIFEST.csv go (data/)")
    ap.add_argument("--per-identity", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    counts = make_lfw_sample(a.source, a.out, a.per_identity, seed=a.seed)
    print(f"{sum(counts.values())} photos of {len(counts)} people in {Path(a.out) / 'lfw_home'}")


if __name__ == "__main__":
    main()
