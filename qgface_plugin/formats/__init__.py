"""On-disk formats shared by training, evaluation and the synthetic data: insightface's RecordIO (``.rec`` +
``.idx``) read without mxnet. Imports numpy (and OpenCV to decode) only.
"""
