"""dfs.faces — faces: detection, alignment and identity encoders (import the submodule you need).

    dfs.faces.dlib_format   a reader for dlib's serialisation format (its DNN model files)
    dfs.faces.identity      differentiable identity encoders: IdentityEncoder; DlibResNetEncoder (dlib's ResNet in
                            PyTorch, checked against dlib itself); ArcFaceEncoder (insightface's ONNX via onnx2torch)
    dfs.faces.dlib_chips    dlib's HOG detector + 5 landmarks + get_face_chip: the chips DlibResNetEncoder expects
    dfs.faces.verification  LFW-style pairs: ROC AUC and accuracy per fold for any identity encoder
"""
