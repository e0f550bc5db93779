"""Instruments and tricks plugged into the trainer's seams: gradient histograms, adaptive and
norm clipping (callbacks), signal propagation, MetaInit (the ``init`` group). Imports the
engine's seams (``engine.run``), optim, norms, models; nothing imports them but configs."""
