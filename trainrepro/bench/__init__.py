"""``python -m trainrepro.bench``: training speed as ratios measured within one run (``speed``),
the data path against a DataLoader (``pipeline``), accuracy per precision (``accuracy``).
Imports engine, models, data."""
