"""Signal-propagation plot (Brock et al. 2021a, Fig. 1) for any models of the registry at init.

    python scripts/plot_signal_propagation.py --depth 110 --out results/spp/spp
    python scripts/plot_signal_propagation.py --depth 20 --variant "WRN=wrn:bn" --out /tmp/spp

Writes <out>.png, <out>.pdf and <out>.csv (per variant and residual block: average squared
channel mean and average channel variance). The measurement is
trainrepro/instruments/signal_prop.py, the figure trainrepro/reproduce/figures.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from trainrepro.instruments.signal_prop import VARIANTS, measure
from trainrepro.reproduce.figures import signal_propagation


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=110, help="6n+2 (default 110)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--variant", action="append", metavar="LABEL=MODEL:NORM",
        help="any registry model and normalization, repeatable (default: BN, none, NF-ResNet)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="prefix: writes .png, .pdf, .csv")
    args = p.parse_args(argv)
    variants = VARIANTS
    if args.variant:
        parsed = []
        for spec in args.variant:
            label, _, rest = spec.rpartition("=")
            model, _, norm = rest.partition(":")
            parsed.append((label or rest, model, norm or "none"))
        variants = tuple(parsed)
    df = measure(args.depth, variants, args.batch, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out.with_suffix(".csv"), index=False)
    for path in signal_propagation(df, args.out):
        print(path)
    return 0

if __name__ == "__main__":
    sys.exit(main())
