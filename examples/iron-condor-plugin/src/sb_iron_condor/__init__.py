"""sb-iron-condor: an iron condor strategy plugin for strikebench.

strikebench finds this module through the entry point in pyproject.toml
(``[project.entry-points.strikebench] iron_condor = "sb_iron_condor"``) and calls
its ``register_strategies`` hook once at start-up.
"""

from strikebench.hookspecs import hookimpl

from sb_iron_condor.strategy import IronCondor, IronCondorParams, choose_condor

__all__ = ["IronCondor", "IronCondorParams", "choose_condor"]


@hookimpl
def register_strategies(register):
    register(IronCondor)
