"""dfs.swap — face-swap methods behind one pipeline (detect -> align -> swap -> blend -> paste back).

    dfs.swap.pipeline    SwapPipeline, the SwapMethod protocol, AlignedFace, PNG metadata, SourcePasted
    dfs.swap.classical   ClassicalSwap: Delaunay + piecewise-affine warp + colour transfer + Poisson blending
    dfs.swap.diffusion   DiffusionSwap: the inpainting diffusion model conditioned on the source's identity
    dfs.swap.faceshifter FaceShifterSwap: FaceShifter's AEI-Net (+ HEAR-Net), the GAN reference

``get_method(name)`` builds a registered method by name (what ``dfs eval --method`` and ``dfs swap`` use).
"""
from __future__ import annotations


def _classical(**kwargs):
    from .classical import ClassicalSwap
    return ClassicalSwap(**kwargs)


def _source_pasted(**kwargs):
    from .pipeline import SourcePasted
    return SourcePasted(**kwargs)


def _diffusion(**kwargs):
    from .diffusion import DiffusionSwap
    return DiffusionSwap(**kwargs)


def _faceshifter(**kwargs):
    from .faceshifter import FaceShifterSwap
    return FaceShifterSwap(**kwargs)


# name -> factory(**options)
METHODS = {"classical": _classical, "source-pasted": _source_pasted, "diffusion": _diffusion,
           "faceshifter": _faceshifter}


def get_method(name: str, **options):
    """The registered method ``name`` built with ``options``."""
    if name not in METHODS:
        raise ValueError(f"unknown swap method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name](**options)
