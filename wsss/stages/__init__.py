"""Stages: one module per command, each a frozen ``<Name>Config`` dataclass and ``run(cfg)``."""
