"""``python -m trainrepro.bench``: training speed as ratios measured within one run (``speed``),
with TFLOP/s and MFU (``flops``, against the matmul peak measured by ``peak``), the data path
against a DataLoader (``pipeline``), accuracy per precision (``accuracy``), several processes
at once against one (``concurrent``). Imports engine, models, data."""
