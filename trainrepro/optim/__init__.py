"""Optimizers and update rules: the ``optimizer`` group's builders (``factory``), the paper
variants (RAdam, LARS/LAMB, SVRG, STORM), the arguments every builder shares (``params``)
and how a batch becomes gradients (``update_rules``). Imports norms; of the engine only the
types in ``trainrepro.engine.run``."""
