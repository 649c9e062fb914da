"""dfs.faces — faces: images, detection, alignment, masks and identity encoders (import the submodule you need).

    dfs.faces.images        load_image: any photo as uint8 RGB (EXIF, gray, RGBA, 16-bit), BadImageError otherwise
    dfs.faces.detect        FaceAnalyzer (dlib offline | insightface buffalo_l when its models exist), Face,
                            FaceNotFoundError, ModelWeightsMissing
    dfs.faces.align         similarity fits (Umeyama), FFHQ / ArcFace-112 templates, warps and their inverse,
                            paste-back, soft face masks
    dfs.faces.dlib_chips    dlib's 150×150 chip of a Face, and DlibEmbedder (batched dlib descriptors)
    dfs.faces.dlib_format   a reader for dlib's serialisation format (its DNN model files)
    dfs.faces.identity      differentiable identity encoders: IdentityEncoder; DlibResNetEncoder (dlib's ResNet in
                            PyTorch, checked against dlib itself); ArcFaceEncoder (insightface's ONNX via onnx2torch)
    dfs.faces.verification  LFW-style pairs: ROC AUC and accuracy per fold for any identity encoder
"""
