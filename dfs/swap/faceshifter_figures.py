"""Figures of notebook 08 drawn from the FaceShifter code itself: the AEI-Net schematic from a forward pass's shapes,
parameter counts, and the AAD attention masks."""
from __future__ import annotations

import numpy as np
import torch

from ..labels import lbl


def parameters(**modules) -> dict[str, int]:
    """{name: number of parameters} of each module."""
    return {name: sum(p.numel() for p in m.parameters()) for name, m in modules.items()}


@torch.no_grad()
def level_shapes(aei) -> list[dict]:
    """Per level k of an :class:`~dfs.swap.faceshifter.AEINet`, read from one forward pass on a dummy batch: the
    resolution, the width of z_att^k, the AAD ResBlk's input and output widths and its parameter count."""
    cfg = aei.config
    x = torch.zeros(1, 3, cfg.image_size, cfg.image_size, device=next(aei.parameters()).device)
    z = torch.zeros(1, cfg.id_dim, device=x.device)
    was = aei.training
    aei.eval()
    z_att = aei.encoder(x)
    seen: list[tuple] = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append((i[0].shape, o.shape)))
             for b in aei.generator.blocks]
    aei.generator(z_att, z)
    for h in hooks:
        h.remove()
    aei.train(was)
    return [{"level": k + 1, "size": int(za.shape[-1]), "z_att": int(za.shape[1]), "h_in": int(i[1]),
             "h_out": int(o[1]), "params": sum(p.numel() for p in blk.parameters())}
            for k, (za, (i, o), blk) in enumerate(zip(z_att, seen, aei.generator.blocks))]


def draw_architecture(rows: list[dict], id_dim: int, title: str = "AEI-Net"):
    """A schematic of AEI-Net from :func:`level_shapes`: the attributes encoder's decoder outputs z_att^k (left),
    the AAD ResBlks (right, bottom to top from 2×2 to S×S), z_id feeding every AAD block."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    n = len(rows)
    fig, ax = plt.subplots(figsize=(9, 0.75 * n + 2))
    ax.set_xlim(0, 10)
    ax.set_ylim(-1.6, n + 0.6)
    ax.axis("off")

    def box(x, y, w, text, colour):
        ax.add_patch(FancyBboxPatch((x, y - 0.3), w, 0.6, boxstyle="round,pad=0.05", fc=colour, ec="0.3"))
        ax.text(x + w / 2, y, text, ha="center", va="center", fontsize=8)

    def arrow(x0, y0, x1, y1, colour="0.3"):
        ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": colour, "lw": 0.8})

    box(0.1, -1.0, 2.2, lbl("target $X_t$ (3×S×S)"), "#dddddd")
    box(7.6, -1.0, 2.2, f"$z_{{id}}(X_s)$ ({id_dim})", "#f6c28b")
    arrow(1.2, -0.7, 1.2, -0.3)
    for r in rows:
        y = r["level"] - 1
        box(0.1, y, 2.6, f"$z_{{att}}^{{{r['level']}}}$: {r['z_att']}×{r['size']}²", "#cfd8e8")
        box(4.2, y, 3.0, lbl("AAD ResBlk {level}: {h_in}→{h_out}\n{kparams:.0f}k params", level=r["level"],
                             h_in=r["h_in"], h_out=r["h_out"], kparams=r["params"] / 1e3), "#bfe3c0")
        arrow(2.8, y, 4.1, y)
        arrow(8.7, -0.7, 7.3, y, colour="#d9822b")
        if r["level"] > 1:
            arrow(5.7, y - 0.7, 5.7, y - 0.32)
    ax.text(1.4, n - 0.2, lbl("attributes encoder\n(U-Net decoder outputs)"), ha="center", va="bottom", fontsize=8)
    ax.text(5.7, n - 0.2, lbl("AAD generator (×2 upsampling\nbetween levels, tanh at the end)"), ha="center",
            va="bottom", fontsize=8)
    ax.text(5.7, -1.0, lbl("$\\hat Y_{{s,t}}$ = output of the last block"), ha="center", va="center", fontsize=8)
    ax.set_title(title)
    return fig


def mask_grid(targets: torch.Tensor, results: torch.Tensor, masks: list, sources: torch.Tensor | None = None):
    """Rows: pairs; columns: (source), target, result, then the mean attention mask M of each AAD ResBlk's two
    main-path layers, level by level (bright: identity, dark: the target's attributes)."""
    import matplotlib.pyplot as plt

    def img(x):
        return ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()

    per_level = [torch.stack(masks[k:k + 2]).mean(0) for k in range(0, len(masks), 2)]
    lead = (([(lbl("source"), sources)] if sources is not None else [])
            + [(lbl("target"), targets), (lbl("result"), results)])
    n, cols = len(targets), len(lead) + len(per_level)
    fig, ax = plt.subplots(n, cols, figsize=(1.4 * cols, 1.5 * n), squeeze=False)
    for i in range(n):
        for c, (name, x) in enumerate(lead):
            ax[i, c].imshow(img(x[i]))
            ax[0, c].set_title(name, fontsize=8)
        for k, m in enumerate(per_level):
            ax[i, len(lead) + k].imshow(m[i, 0].cpu().numpy(), cmap="magma", vmin=0, vmax=1)
            ax[0, len(lead) + k].set_title(f"M, {m.shape[-1]}²", fontsize=8)
    for a in ax.flat:
        a.axis("off")
    fig.tight_layout()
    return fig


def mask_means(masks: list) -> list[tuple[int, float]]:
    """(resolution, mean of M over pairs, pixels and the level's two main-path AAD layers) per level."""
    return [(int(masks[k].shape[-1]), float(np.mean([masks[k].mean().item(), masks[k + 1].mean().item()])))
            for k in range(0, len(masks), 2)]
