"""Instruments and tricks plugged into the trainer's seams: gradient histograms, adaptive and
norm clipping, snapshots, model EMA and SWA, the experiment loggers (the ``logger`` group) as
callbacks; signal propagation; MetaInit (the ``init`` group). Imports the engine (its seams in
``engine.run``; EMA and SWA evaluate through ``engine.train.evaluate``), optim, norms, models;
nothing imports them but configs."""
