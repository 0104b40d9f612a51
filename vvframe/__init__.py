"""vvframe: speaker-verification experiments composed from plugins by recipes.

The kernel knows kinds of component, finds components through entry points, builds them from recipe
entries and runs stages. Importing it does not import torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

from vvframe.cli.plugins import describe, listing
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
from vvframe.core.registry import KINDS, Component, build, find, kind
from vvframe.core.run import RunContext
from vvframe.core.schema import Range

# The modules a plugin package (first-party or third-party) may import: this package's names above, the kernel's
# signature and file tools, and the machinery that components share. The command line, the data tools, the
# recipe loader and the model-loading API are not among them (tests/test_layout.py checks plugins/ and examples/).
PUBLIC_MODULES = (
    "vvframe",
    "vvframe.core.atomic",
    "vvframe.core.errors",
    "vvframe.core.registry",
    "vvframe.core.run",
    "vvframe.core.schema",
    "vvframe.data.audio",
    "vvframe.data.dataset",
    "vvframe.data.lists",
    "vvframe.data.shards",
    "vvframe.data.vad",
    "vvframe.training.checkpoint",
    "vvframe.training.launch",
    "vvframe.scoring.embed",
    "vvframe.scoring.metrics",
    "vvframe.scoring.calibration",
    "vvframe.scoring.thresholds",
    "vvframe.inference.card",
    "vvframe.testing",
)


def load(source, device="auto", checkpoint=None, *, trust_recipe=False):
    """A trained run directory or an exported model file as a :class:`vvframe.inference.api.SpeakerModel` (imports torch)."""
    from vvframe.inference.api import load as _load

    return _load(source, device=device, checkpoint=checkpoint, trust_recipe=trust_recipe)


__all__ = [
    "PUBLIC_MODULES",
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
