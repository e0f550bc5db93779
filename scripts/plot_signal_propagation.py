"""Signal-propagation plot (Brock et al. 2021a, Fig. 1) for any models of the registry at init.

    python scripts/plot_signal_propagation.py --depth 110 --out results/spp/spp
    python scripts/plot_signal_propagation.py --depth 20 --variant "WRN=wrn:bn" --out /tmp/spp

Writes <out>.png, <out>.pdf and <out>.csv (per variant and residual block: average squared
channel mean and average channel variance). The code is trainrepro/signal_prop.py.
"""

from __future__ import annotations

import sys

from trainrepro.signal_prop import main

if __name__ == "__main__":
    sys.exit(main())
