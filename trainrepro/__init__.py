"""trainrepro: config-driven reproductions of optimization and normalization papers."""

__version__ = "0.1.0"
