"""dfs — companion code for the thesis *Face swap with generative (diffusion) models*.

Submodules (import what you need; nothing heavy is imported here):

    dfs.diffusion   the DDPM/DDIM maths as plain tensor functions
    dfs.toy         2-D toy data, the exact score of a Gaussian mixture, a small MLP ε-model, Langevin dynamics
    dfs.train       one trainer for every model (accelerate, EMA, atomic resumable checkpoints)
    dfs.figures     ``save(fig, name)``: every thesis figure goes through here into figures/ + MANIFEST.json
    dfs.notebook    the set-up call at the top of every notebook
    dfs.reproduce   runs the notebooks in order (``dfs reproduce``)
    dfs.device      device choice, autocast, seeding
"""
__version__ = "0.1.0"
