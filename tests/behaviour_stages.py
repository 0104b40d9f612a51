"""Behaviour of a stage component: its factory reads only the run context, component sections and schemas."""

from __future__ import annotations

from vvframe.core.recipe import COMPONENT_SECTIONS, stage_contract
from vvframe.core.schema import parameters


def behaves(name: str, factory) -> None:
    params = parameters(factory)
    assert stage_contract(params) == [], (name, stage_contract(params))
    assert [p.name for p in params][:1] == ["ctx"], f"stage {name} should take the run context first"
    sections = [p.name for p in params if p.name in COMPONENT_SECTIONS]
    assert all(p.annotation is not None for p in params), name
    assert len(set(sections)) == len(sections)
