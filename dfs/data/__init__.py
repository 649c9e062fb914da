"""dfs.data — datasets (import the submodule you need; nothing heavy is imported here).

    dfs.data.faces        face photos with identity labels (LFW through scikit-learn, folder-per-identity trees,
                          CelebA) or without (FFHQ / CelebA-HQ folders), split by identity
    dfs.data.face_cache   detect -> align -> crop -> mask -> identity embedding, written once to sharded .npz files
"""
