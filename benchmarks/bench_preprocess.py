"""Preprocessing throughput: photos -> dfs.data.face_cache (detect, 68 landmarks, align, crop, mask[, embed]).

    .venv/bin/python benchmarks/bench_preprocess.py [--data lfw|deepface] [--photos 100] [--size 256]
                                                    [--template ffhq] [--embed none|dlib] [--upsample 1]

Builds a fresh cache of the first --photos photos of the shared faces (DFS_DATA, else <repo>/../shared/data/faces;
"deepface" reads the sibling faces-deepface/) in a temporary folder, and prints faces/s with the time split
into detection + landmarks (dlib HOG), identity embedding, and the rest (decode, align, warp, mask, write).
Then a second build on the unchanged inputs, which should only read the manifest.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("lfw", "deepface"), default="lfw")
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--template", choices=("ffhq", "arcface"), default="ffhq")
    ap.add_argument("--embed", choices=("none", "dlib"), default="none")
    ap.add_argument("--upsample", type=int, default=1)
    args = ap.parse_args()
    if args.photos < 1:
        raise ValueError("--photos must be positive")

    from dfs.data.face_cache import build_face_cache
    from dfs.faces.dlib_chips import DlibEmbedder
    from dfs.data.faces import FaceImages, folder_dataset
    from dfs.faces.detect import FaceAnalyzer
    from dfs.paths import repo_root

    faces = Path(os.environ.get("DFS_DATA") or repo_root().parent / "shared" / "data" / "faces")
    root = faces / "lfw_home" / "lfw_funneled" if args.data == "lfw" else faces.parent / "faces-deepface"
    ds = folder_dataset(root)
    step = max(1, len(ds) // args.photos)  # spread over identities rather than the first few people
    ds = FaceImages(ds.records[::step][: args.photos])

    timing = {"detect": 0.0, "embed": 0.0}

    class Timed(FaceAnalyzer):
        def largest(self, image, index=None, name=None):
            t = time.perf_counter()
            try:
                return super().largest(image, index, name)
            finally:
                timing["detect"] += time.perf_counter() - t

    embed = None
    if args.embed == "dlib":
        class TimedEmbedder(DlibEmbedder):  # chips are cut per face, then embedded in batches per shard
            def embed_chips(self, chips):
                t = time.perf_counter()
                out = super().embed_chips(chips)
                timing["embed"] += time.perf_counter() - t
                return out
        embed = TimedEmbedder()

    with tempfile.TemporaryDirectory() as tmp:
        report = build_face_cache(ds, Path(tmp) / "cache", size=args.size, template=args.template, embed=embed,
                                  analyzer=Timed(upsample=args.upsample), progress=False)
        t = time.perf_counter()
        again = build_face_cache(ds, Path(tmp) / "cache", size=args.size, template=args.template, embed=embed,
                                 analyzer=Timed(upsample=args.upsample), progress=False)
        reuse_s = time.perf_counter() - t
    total = report.seconds
    rest = total - timing["detect"] - timing["embed"]
    print(f"{args.data}: {report}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"size {args.size}, template {args.template}, dlib HOG upsample {args.upsample}, embed {args.embed}")
    print(f"throughput: {report.faces / total:.2f} faces/s ({1000 * total / report.photos:.0f} ms/photo)")
    print(f"  detect + 68 landmarks: {1000 * timing['detect'] / report.photos:.0f} ms/photo")
    if args.embed != "none":
        print(f"  identity embedding:    {1000 * timing['embed'] / max(report.faces, 1):.0f} ms/face "
              "(torch dlib ResNet, batches of 32; chip cutting counts in the rest)")
    print(f"  decode, align, mask, write: {1000 * rest / report.photos:.0f} ms/photo")
    print(f"second run (unchanged inputs): {reuse_s:.2f} s, {again.shards_reused} shard(s) re-used")


if __name__ == "__main__":
    main()
