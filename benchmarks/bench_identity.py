"""Speed of the dlib face-recognition ResNet: dfs's PyTorch port (batched) vs dlib's compute_face_descriptor.

    .venv/bin/python benchmarks/bench_identity.py [--faces 64] [--batch 32] [--device cpu]

Runs both on the same random 150x150 chips (the speed does not depend on the content) and prints ms/face for
each and their ratio.  dlib runs on the CPU (dlib-bin has no CUDA); torch on --device.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.faces < 1 or args.batch < 1:
        raise ValueError("--faces and --batch must be positive")

    import dlib

    from dfs.faces.identity import DlibResNetEncoder, dlib_model_path

    chips = np.random.default_rng(0).integers(0, 256, (args.faces, 150, 150, 3), dtype=np.uint8)
    rec = dlib.face_recognition_model_v1(str(dlib_model_path()))
    rec.compute_face_descriptor(chips[0])  # warm-up
    t = time.perf_counter()
    for c in chips:
        rec.compute_face_descriptor(c)
    dlib_ms = (time.perf_counter() - t) * 1000 / args.faces

    enc = DlibResNetEncoder().to(args.device)
    x = torch.from_numpy(chips).permute(0, 3, 1, 2)
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)
    with torch.no_grad():
        enc.descriptor(x[: args.batch].to(args.device))  # warm-up
        sync()
        t = time.perf_counter()
        for i in range(0, args.faces, args.batch):
            enc.descriptor(x[i:i + args.batch].to(args.device))
        sync()
    torch_ms = (time.perf_counter() - t) * 1000 / args.faces
    print(f"{args.faces} faces, torch {torch.__version__} on {args.device} ({torch.get_num_threads()} threads), "
          f"batch {args.batch}")
    print(f"dlib compute_face_descriptor: {dlib_ms:.1f} ms/face")
    print(f"dfs DlibResNetEncoder:        {torch_ms:.1f} ms/face   ({dlib_ms / torch_ms:.1f}x dlib's speed)")


if __name__ == "__main__":
    main()
