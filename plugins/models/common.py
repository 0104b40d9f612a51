"""What the models share (this module is not a component): the sizes their signatures accept."""

from __future__ import annotations

from typing import Annotated

from vvframe.core.schema import Range

# a layer width (channels, embedding, bottleneck): positive, and at most 65536, so that a typo in a recipe is refused
# by `vvframe check` instead of asking for terabytes when the model is built
Width = Annotated[int, Range(1, 65536)]
