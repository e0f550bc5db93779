"""Every declared paper, by name: ``trainrepro reproduce <name>`` and the tests read this.
Each module imports the reproduce types and whatever layer below it measures with."""

from __future__ import annotations

from trainrepro.reproduce.paper import Paper
from trainrepro.reproduce.papers import (
    adamw,
    bn4things,
    clr,
    gn,
    largebatch,
    mobilenetv2,
    nfnet,
    radam,
    sgdr,
    smith18,
    svrg,
)

PAPERS: dict[str, Paper] = {
    p.name: p
    for p in (
        smith18.PAPER,
        radam.PAPER,
        nfnet.PAPER,
        largebatch.PAPER,
        svrg.PAPER,
        gn.PAPER,
        bn4things.PAPER,
        sgdr.PAPER,
        adamw.PAPER,
        clr.PAPER,
        mobilenetv2.PAPER,
    )  # fmt: skip
}
