"""Errors of the swap models that callers (the CLI) turn into one-line messages."""
from __future__ import annotations


class SwapOutOfMemory(RuntimeError):
    """The device ran out of memory while training or sampling."""


def oom_message(what: str, exc: BaseException) -> str:
    return (f"out of memory while {what} ({str(exc).splitlines()[0][:160]}); use fewer sampling steps or a smaller "
            "batch (--batch-size / batch_size), a smaller image_size, or the CPU (DFS_DEVICE=cpu)")
