"""Reading runs back: collect run directories into tables and curves (``curves``), BN
statistics re-estimated for example weighting (``bn_alpha``), cross-validation (``cv``).
Imports engine and config."""
