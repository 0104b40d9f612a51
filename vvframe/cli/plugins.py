"""``vvframe plugins``: list the installed components, describe one, check them all; and what a run recorded of them."""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import inspect
import sys

from vvframe.core import recipe as recipes
from vvframe.core import registry


def listing(kind_name: str | None = None) -> list[tuple[str, str, str, str, str]]:
    """Rows ``(kind, name, target, distribution, version)`` sorted by kind then name; imports nothing."""
    if kind_name is not None:
        registry.kind(kind_name)
    rows = [
        (ep.group[len(registry.GROUP_PREFIX) :], ep.name, ep.value, *registry.distribution(ep))
        for ep in registry.entry_points(kind_name)
    ]
    order = {k: i for i, k in enumerate(registry.KINDS)}
    return sorted(rows, key=lambda r: (order.get(r[0], len(order)), r[0], r[1]))


def describe(kind_name: str, name: str) -> str:
    """The parameters of one component (defaults, annotations), what vvframe supplies, its docstring's first line."""
    ep = registry.find(kind_name, name)
    factory = registry.load(ep)
    params, supplies = registry.signature(kind_name, factory), registry.KINDS[kind_name].supplies
    doc = (inspect.getdoc(factory) or "").strip().splitlines()
    own = [p for p in params if p.name not in supplies]
    given = [p.name for p in params if p.name in supplies]
    return "\n".join(
        [
            f"{kind_name} '{name}'  ->  {ep.value}  ({registry.where(ep)})",
            *[f"  {line}" for line in doc[:1]],
            "  arguments:" if own else "  arguments: none",
            *[f"    {p.describe()}" + ("   (required)" if p.required else "") for p in own],
            f"  supplied by vvframe: {', '.join(given) if given else 'none'}",
        ]
    )


def compare_plugins(resolved: recipes.Resolved) -> list[str]:
    """Warnings for components recorded in a run's ``plugins:`` block that are installed differently now."""
    recorded, source = resolved.recipe.data.get("plugins"), resolved.recipe.source
    installed = {(ep.group, ep.name, ep.value): ep for ep in registry.entry_points()}
    warnings = []
    for path, info in recorded.items() if isinstance(recorded, dict) else ():
        if not isinstance(info, dict) or not isinstance(info.get("entry_point"), str):
            continue
        group, _, rest = info["entry_point"].partition(": ")
        ep_name, _, value = rest.partition(" = ")
        ep = installed.get((group, ep_name, value))
        if ep is None and registry.is_reference(ep_name):
            ep = metadata.EntryPoint(ep_name, value, group)
        if ep is None:
            warnings.append(f"{source}: {path} was recorded as {info['entry_point']}, which is not installed now")
        elif (now := registry.where(ep)) != info.get("distribution"):
            warnings.append(f"{source}: {path} was recorded from {info.get('distribution')}; installed now: {now}")
    return warnings


def main(rest: list[str], description: str) -> int:
    """``vvframe plugins [KIND [NAME]] [--check]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="vvframe plugins", description=description)
    parser.add_argument("kind", nargs="?", metavar="KIND", help="one kind (models, losses, ...)")
    parser.add_argument("name", nargs="?", metavar="NAME", help="describe this component")
    parser.add_argument("--check", action="store_true", help="import and validate every entry point (for CI)")
    opts = parser.parse_args(rest)
    if opts.check:
        return _check_plugins()
    if opts.name:
        registry.kind(opts.kind)
        print(describe(opts.kind, opts.name))
        return 0
    rows = listing(opts.kind)
    kinds = [opts.kind] if opts.kind else list(registry.KINDS)
    table = [("KIND", "NAME", "TARGET", "DISTRIBUTION")]
    for k in kinds:
        mine = [r for r in rows if r[0] == k]
        table += [(r[0], r[1], r[2], f"{r[3]} {r[4]}".strip()) for r in mine] or [(k, "-", "(none installed)", "")]
    table += [(r[0], r[1], r[2], f"{r[3]} {r[4]} (unknown kind)") for r in rows if r[0] not in registry.KINDS]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print(("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3]).rstrip())
    print("\n`vvframe plugins KIND NAME` describes one; `vvframe plugins --check` imports and checks them all.")
    return 0


def _check_plugins() -> int:
    from vvframe.testing import check_entry_points

    problems = check_entry_points()
    count = len(registry.entry_points())
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {count} entry points:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"ok: {count} entry points import and have explicit signatures")
    return 0
