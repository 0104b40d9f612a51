"""vvframe: speaker-verification experiments composed from plugins by recipes.

The kernel knows kinds of component, finds components through entry points, builds them from recipe
entries and runs stages. Importing it does not import torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

from vvframe.core.errors import (
    ArgumentError,
    BadValue,
    ComponentNotFound,
    ContractError,
    PluginImportError,
    Problem,
    RecipeError,
    VvframeError,
)
from vvframe.core.registry import KINDS, Component, build, describe, find, kind, listing
from vvframe.core.run import RunContext
from vvframe.core.schema import Range


def load(source, device="auto", checkpoint=None, *, trust_recipe=False):
    """A trained run directory or an exported model file as a :class:`vvframe.inference.api.SpeakerModel` (imports torch)."""
    from vvframe.inference.api import load as _load

    return _load(source, device=device, checkpoint=checkpoint, trust_recipe=trust_recipe)


__all__ = [
    "load",
    "__version__",
    "VvframeError",
    "ComponentNotFound",
    "PluginImportError",
    "ArgumentError",
    "BadValue",
    "ContractError",
    "RecipeError",
    "Problem",
    "KINDS",
    "Component",
    "kind",
    "Range",
    "RunContext",
    "build",
    "describe",
    "find",
    "listing",
]
