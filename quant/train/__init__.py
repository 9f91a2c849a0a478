"""Quantization-aware training of DenseShift networks (torch), and their export to model files.

Importing this package is cheap: torch is imported by its submodules only, so the ``shiftnpu``
command line can list ``train`` without loading torch.

- :mod:`quant.train.weights`: weight parametrizations (DenseShift, with-zero power of two, int8, FP32)
- :mod:`quant.train.layers`: ``DenseShiftLinear``, ``DenseShiftConv2d`` and the baseline layers
- :mod:`quant.train.actquant`: int8 activation fake-quantization
- :mod:`quant.train.network`: blocks (layer, BatchNorm, requantizer), the digits models, BN folding
- :mod:`quant.train.trainer`: the training loop
- :mod:`quant.train.attention`: integer attention pooling (torch twin of :mod:`quant.attention`)
- :mod:`quant.train.export`: torch network -> :class:`quant.model.NPUModel`
"""
