"""Normalization layers and the ``normalization`` group's builders (``factory``): batch, group,
layer, instance, ghost and batch-group norm, weight standardization, example weighting, and
the batch checks they need. Imports only config and errors."""
