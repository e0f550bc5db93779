"""Run a list of trainrepro runs restartably, one ``<run dir> <overrides>`` per line of stdin
(or ``--runs FILE``); ``--jobs``, ``--threads``, ``--dry-run``. The engine, and its docs, is
trainrepro/engine/runner.py; `trainrepro reproduce <paper>` builds the lines itself.

    printf '%s\\n' "runs/x/seed0 +experiment=radam/adam seed=0" | python scripts/run_experiments.py
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from trainrepro.engine.runner import DONE, main, parse_runs, run_one, status_of
except ImportError:  # run with a Python that lacks the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from trainrepro.engine.runner import DONE, main, parse_runs, run_one, status_of

__all__ = ["DONE", "main", "parse_runs", "run_one", "status_of"]

if __name__ == "__main__":
    sys.exit(main())
