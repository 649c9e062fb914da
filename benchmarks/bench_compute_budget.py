"""Compute budgets a GPU user can plan with: FLOPs per training and sampling step, activation memory, GPU-hours.

For every preset that a full run trains, one training step (forward + backward of the loss) and one sampling step
(forward, both classifier-free-guidance branches where the sampler uses them) are run on the CPU at batch 1 under
``torch.utils.flop_counter.FlopCounterMode``; FLOPs scale linearly with the batch, so the step at batch B costs
B times that.  Activation memory is the bytes of the tensors autograd saves for backward in that step (fp32, batch
1, times B); weights, gradients, Adam's two moments and the EMA copy add 20 bytes per parameter (fp32).  The
GPU-hours are an **estimate**: total training FLOPs / (40 % × 989 TFLOP/s, one H100's dense bf16 peak).  The quick
presets are measured too, so the estimate can be set against their measured CPU time.

    OMP_NUM_THREADS=1 python benchmarks/bench_compute_budget.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

H100_BF16 = 989e12          # dense bf16 FLOP/s of one H100 SXM (NVIDIA's datasheet)
MFU = 0.40                  # assumed model-FLOPs utilisation
STATE_BYTES_PER_PARAM = 20  # fp32 weight + gradient + Adam m, v + EMA


def flops_and_activations(step) -> tuple[float, float]:
    """(FLOPs, bytes of tensors saved for backward) of ``step()``."""
    seen, saved = set(), [0]

    def pack(t):
        key = (t.data_ptr(), t.dtype, tuple(t.shape))
        if t.data_ptr() and key not in seen:
            seen.add(key)
            saved[0] += t.numel() * t.element_size()
        return t

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return float(counter.get_total_flops()), float(saved[0])


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def swap_rows(preset: str) -> list[dict]:
    from dfs.faces.identity_chips import identity_of_crops
    from dfs.swap.config import load_config
    from dfs.swap.diffusion import SwapDiffusion
    cfg = load_config(preset)
    torch.manual_seed(0)
    model = SwapDiffusion(cfg)
    S = cfg.image_size
    target, mask = torch.rand(1, 3, S, S) * 2 - 1, torch.zeros(1, 1, S, S)
    mask[..., S // 4:3 * S // 4, S // 4:3 * S // 4] = 1
    lm = torch.rand(1, 68, 2) * S * 0.5 + S * 0.25
    emb = torch.nn.functional.normalize(torch.randn(1, cfg.id_dim), dim=-1)
    chip = torch.tensor([[[150 / S, 0.0, 0.0], [0.0, 150 / S, 0.0]]])
    ref = torch.rand(1, 3, S, S) * 2 - 1 if cfg.source_pixels else None
    unet_only = SwapDiffusion(replace(cfg, id_weight=0.0))   # the U-Net's part; the identity loss is counted apart
    unet_only.load_state_dict(model.state_dict())

    def train_step():
        unet_only(target, mask, lm, emb, chip, ref)["loss"].backward()

    def id_step():
        x = (torch.rand(1, 3, S, S) * 2 - 1).requires_grad_(True)
        (identity_of_crops(x, chip) * emb).sum().backward()

    cond = model.condition(target, mask, lm, ref)
    tokens = model.tokens(emb)
    t = torch.tensor([500, 500])

    def sample_step():
        with torch.no_grad():
            model.eps(torch.randn(2, 3, S, S), t, torch.cat([model.null_condition(cond), cond]),
                      torch.cat([model.tokens(None, 1), tokens]))

    f_unet, a_unet = flops_and_activations(train_step)
    f_id, a_id = flops_and_activations(id_step)
    p_id = (cfg.id_t_max / cfg.T) * (1 - cfg.p_uncond) if cfg.id_weight > 0 else 0.0
    f_sample, _ = flops_and_activations(sample_step)
    return [{"model": f"diffusion swap ({preset})", "resolution": S, "parameters": n_params(model),
             "batch": cfg.batch_size, "steps": cfg.steps, "train_flops_per_example": f_unet + p_id * f_id,
             "activation_bytes_per_example": a_unet + p_id * a_id, "mixed_precision": cfg.mixed_precision,
             "sample_flops": f_sample * cfg.sample_steps, "sample_note": f"{cfg.sample_steps} DDIM steps, 2 CFG branches"}]


def faceshifter_rows(preset: str) -> list[dict]:
    from dfs.swap.faceshifter import FaceShifterGAN, HEARNet, hear_losses, load_config, same_pair_weights
    cfg = load_config(preset)
    torch.manual_seed(0)
    gan = FaceShifterGAN(cfg)
    S = cfg.image_size
    x = torch.rand(2, 3, S, S) * 2 - 1                # batch 2: BatchNorm needs > 1 value per channel at 1×1
    z = torch.nn.functional.normalize(torch.randn(2, 128), dim=-1)
    chip = torch.tensor([[[150 / S, 0.0, 0.0], [0.0, 150 / S, 0.0]]]).repeat(2, 1, 1)
    w = same_pair_weights(torch.tensor([1.0, 0.0]))

    def aei_step():
        g = gan(x, z, chip, w, part="g")
        g["loss"].backward()
        gan(x, None, None, None, part="d", fake=g["fake"].detach())["loss"].backward()

    def sample_step():
        with torch.no_grad():
            gan.aei(x[:1], z[:1])

    f_aei, a_aei = flops_and_activations(aei_step)
    f_sample, _ = flops_and_activations(sample_step)
    rows = [{"model": f"FaceShifter AEI-Net + D ({preset})", "resolution": S,
             "parameters": n_params(gan), "batch": cfg.batch_size, "steps": cfg.steps,
             "train_flops_per_example": f_aei / 2, "activation_bytes_per_example": a_aei / 2,
             "mixed_precision": cfg.mixed_precision, "sample_flops": f_sample, "sample_note": "one AEI-Net pass"}]
    hear = HEARNet(cfg)
    aei = gan.aei.eval().requires_grad_(False)

    def hear_step():
        hear_losses(hear, aei, x, z, z, chip, w, cfg)["loss"].backward()

    f_hear, a_hear = flops_and_activations(hear_step)
    rows.append({"model": f"FaceShifter HEAR-Net ({preset})", "resolution": S, "parameters": n_params(hear),
                 "batch": cfg.batch_size, "steps": cfg.hear_steps, "train_flops_per_example": f_hear / 2,
                 "activation_bytes_per_example": a_hear / 2, "mixed_precision": cfg.mixed_precision,
                 "sample_flops": None, "sample_note": ""})
    return rows


def estimate(row: dict) -> dict:
    B = row["batch"]
    step = row["train_flops_per_example"] * B
    total = step * row["steps"]
    act = row["activation_bytes_per_example"] * B
    return {**row, "train_flops_per_step": step, "train_flops_total": total,
            "h100_hours_at_40pct_mfu": total / (MFU * H100_BF16) / 3600,
            "memory_gib_fp32": (act + STATE_BYTES_PER_PARAM * row["parameters"]) / 2**30,
            "activation_gib_fp32": act / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for fn, arg in ((swap_rows, "quick"), (swap_rows, "full"), (faceshifter_rows, "quick"),
                    (faceshifter_rows, "full")):
        t0 = time.perf_counter()
        rows += [estimate(r) for r in fn(arg)]
        print(f"measured {fn.__name__}({arg}) in {time.perf_counter() - t0:.0f} s", flush=True)
    print("\n| model | px | parameters | batch × steps | GFLOPs / training step | total PFLOPs | H100-hours at "
          "40 % MFU (estimate) | activations + state, fp32 (GiB) | sampling GFLOPs / result |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sample = f"{r['sample_flops'] / 1e9:.1f} ({r['sample_note']})" if r["sample_flops"] else "–"
        print(f"| {r['model']} | {r['resolution']} | {r['parameters'] / 1e6:.1f} M | {r['batch']} × {r['steps']:,} | "
              f"{r['train_flops_per_step'] / 1e9:,.0f} | {r['train_flops_total'] / 1e15:,.1f} | "
              f"{r['h100_hours_at_40pct_mfu']:.2f} | {r['memory_gib_fp32']:.1f} | {sample} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"assumptions": {"gpu_flops": H100_BF16, "mfu": MFU, "state_bytes_per_param":
                                       STATE_BYTES_PER_PARAM}, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
