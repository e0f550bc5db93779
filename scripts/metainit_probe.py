"""What MetaInit (``+init=metainit``) does to a run's model, before any training.

    python scripts/metainit_probe.py +experiment=svrg/resnet_nobn_svrg_metainit \
        profile=svrg_quick optimizer.lr=0.01 seed=1

Builds the run's model as the trainer would (same seed, same data), once without its ``init``
and once after MetaInit with the run's own settings, and prints on one training batch: the
logits' spread, the loss, the gradient norm, the weight norms that MetaInit changed most, and
the gradient quotient before and after. A model whose logits collapse (loss at ln(classes),
gradient orders of magnitude smaller) has met MetaInit's degenerate minimum: shrinking a few
weight tensors makes the network nearly constant, which drives the gradient quotient down
without making it trainable.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    from trainrepro.config import compose
except ImportError:  # run with a Python that lacks the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from trainrepro.config import compose

from omegaconf import open_dict

from trainrepro.engine.build import build_run
from trainrepro.instruments.metainit import metainit


def probe(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, object]:
    model.zero_grad(set_to_none=True)
    out = model(x)
    loss = F.cross_entropy(out, y)
    loss.backward()
    grad = sum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None)
    norms = {n: float(p.detach().norm()) for n, p in model.named_parameters() if p.dim() >= 2}
    return {"logits_std": float(out.detach().std()), "loss": float(loss.detach()),
            "grad_norm": grad**0.5, "norms": norms}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="+", help="a run's overrides, with +init=metainit")
    p.add_argument("--batch", type=int, default=128, help="training images to probe with")
    p.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = p.parse_args(argv)
    cfg = compose(args.overrides)
    if cfg.get("init") is None:
        p.error("the overrides set no init: add +init=metainit")
    settings = {k: v for k, v in cfg.init.items() if k not in ("name", "_target_")}
    with open_dict(cfg):
        del cfg["init"]  # the model exactly as the run builds it, before MetaInit
    run = build_run(cfg)
    x, y = next(iter(run.train_loader.batches(0, args.batch)))
    before = probe(run.model, x, y)
    tuned = copy.deepcopy(run.model)
    data = run.data
    record = metainit(tuned, input_shape=(data.in_channels, data.image_size, data.image_size),
                      num_classes=data.num_classes, seed=cfg.seed, **settings)  # fmt: skip
    after = probe(tuned, x, y)
    ratios = sorted((after["norms"][k] / before["norms"][k], k) for k in before["norms"])
    print(f"gradient quotient {record['gq_before']:.4g} -> {record['gq_after']:.4g} after "
          f"{record['steps_run']} steps ({', '.join(f'{k} {v}' for k, v in settings.items())})")
    for name, r in (("before", before), ("after", after)):
        print(f"{name:6} MetaInit: logits std {r['logits_std']:.4g}, loss {r['loss']:.4f}, "
              f"gradient norm {r['grad_norm']:.4g} (ln {data.num_classes} = "
              f"{torch.log(torch.tensor(float(data.num_classes))):.4f})")
    print("weight norms, after / before (smallest first):")
    for ratio, name in ratios[:6] + ratios[-2:]:
        print(f"  {name:40} {before['norms'][name]:8.3f} -> {after['norms'][name]:8.3f} "
              f"({ratio:.3f}x)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"overrides": args.overrides, "metainit": record,
                  "before": before, "after": after}  # fmt: skip
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
