"""Levers: how a proposal becomes a challenger the gate can judge.

A `Lever` turns a proposal of its own type into a new candidate (a harness
version and an adapter version) or refuses it with a reason. It is given a
`LeverContext`, not the loop: the run's records, the task, rollout collection
through an unchanged harness, adapter serving and progress reporting, and
nothing else. The loop then gates every challenger the same way.

The builtin levers are `harness` (below) and `weights` (`sia.loop.weight_lever`).
A further lever is one file that defines a `Lever` and its proposal type, plus
`register(MyLever())`; its name is then accepted by `--levers` and its
proposals are stored and resumed like the builtin ones. The registry exists
because lever names are typed on the command line.
"""

from __future__ import annotations

from sia.agents.proposal import HarnessEdit
from sia.loop.lever_context import Challenger, Lever, LeverContext

__all__ = ["Challenger", "HarnessLever", "Lever", "LeverContext", "available_levers", "lever_names", "register"]


class HarnessLever:
    """A new harness version on the champion's adapter; refused before it runs if it does not compile or the guards object."""

    name = "harness"
    proposal_type = HarnessEdit

    def challenger(self, ctx: LeverContext, gen: int, champion: str, proposal: HarnessEdit) -> Challenger:
        store = ctx.store
        champ = store.candidate(champion)
        refused = ctx.refusal(proposal.source)
        if refused:
            version = store.add_harness_version(proposal.source, f"[rejected before running] {proposal.rationale}")
            cid = store.add_candidate(version, champ.adapter_version, proposal.lever, proposal.rationale, parent=champion)
            return Challenger(cid, refused=f"invalid harness: {refused}")
        version = store.add_harness_version(proposal.source, proposal.rationale, parent=champ.harness_version)
        return Challenger(store.add_candidate(version, champ.adapter_version, proposal.lever, proposal.rationale, parent=champion))


_EXTRA: dict[str, Lever] = {}


def register(lever: Lever) -> Lever:
    """Make `lever` available to `--levers` and to the loop, under `lever.name`."""
    _EXTRA[lever.name] = lever
    return lever


def available_levers() -> dict[str, Lever]:
    from sia.loop.weight_lever import WeightLever

    return {"harness": HarnessLever(), "weights": WeightLever(), **_EXTRA}


def lever_names() -> tuple[str, ...]:
    return tuple(available_levers())
