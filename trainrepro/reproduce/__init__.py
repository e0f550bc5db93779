"""Paper reproductions declared once (trainrepro/reproduce/papers/<paper>.py: runs per profile,
the paper's numbers with their sources, claims with acceptance checks, figures) and one
command that runs and reports any of them: ``trainrepro reproduce <paper> --profile quick``.

Modules: paper.py (the declaration types), data.py (loading runs or runs.csv), report.py
(REPORT.md and results/README.md), preflight.py, figures.py, cli.py; the restartable runner
is trainrepro/engine/runner.py. Imports analysis, engine, config and the layers below them.
"""
