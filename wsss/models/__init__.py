"""Network zoo: registry, backbones, method networks, weight loading, input normalisation.

Importing this package is cheap (no torch); the registry imports the model modules on first use.
"""
from wsss.models.registry import build_backbone, build_model, list_models, model_entry, register_model

__all__ = ["build_backbone", "build_model", "list_models", "model_entry", "register_model"]
