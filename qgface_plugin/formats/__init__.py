"""On-disk formats shared by training, evaluation and the synthetic data (numpy and the standard library;
OpenCV only to decode images). One module per format:

* :mod:`.recordio` -- insightface's RecordIO (``.rec`` + ``.idx``) read without mxnet: ``RecordReader``;
* :mod:`.record_dataset` -- ``RecordDataset``, the torch ``Dataset`` on it (arcface_torch's ``MXFaceDataset``
  contract);
* :mod:`.recordio_writer` -- the same files written without mxnet (byte-identical to mxnet's writer);
* :mod:`.records` -- the "header0" record-set layout (header record 0, identity records) and ``property``;
* :mod:`.verification_bin` -- the verification ``.bin`` pickle (LFW, CFP-FP, ...);
* :mod:`.face_crop` -- the aligned 112x112 crop's five-point ArcFace template;
* :mod:`.ijb_meta` -- the IJB-B/C ``meta/`` file names.
"""
