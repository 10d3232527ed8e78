"""A hook call the engine makes many times a session (an order's events and fill, a decision), as pluggy makes it.

``fire(pm.hook.on_fill, run=..., order=..., fill=...)`` answers what ``pm.hook.on_fill(run=..., order=..., fill=...)``
answers, and calls the same implementations with the same arguments in the same order. pluggy's own call passes
through four generic layers (``HookCaller.__call__``: defaults, the argument check, a copy of the implementations;
the plugin manager's ``_hookexec``; ``_multicall``'s wrapper and exception handling) that cost ~5 us a call, more
than the journal's implementation of ``on_order_event`` itself; an order makes 4-5 such calls. When a call is the
plain case those layers then reduce to (every implementation a plain one: no wrappers, no keyword-only defaults;
no hook-call monitoring or tracing on the plugin manager; a hookspec that is neither historic nor has argument
defaults; every argument the spec and the implementations name given), the implementations are called directly,
last registered first as ``_multicall`` does, the list of them read at every call (so a plugin registered or
unregistered between two calls is seen, as pluggy sees it). Anything else goes through pluggy itself.
"""

from __future__ import annotations

import pluggy

__all__ = ["fire"]

# pluggy's default executor of a plugin manager (what hook-call monitoring and tracing replace)
_DEFAULT_EXEC = getattr(pluggy.PluginManager("strikebench-probe"), "_inner_hookexec", None)
_HOOK_CALLER = getattr(pluggy, "HookCaller", None)

#: HookCaller -> (its implementations when the plan was made, plan or None when the call is not the plain case)
_PLANS: dict = {}


def _plan(caller, impls: list):
    """((function, argnames) of each implementation in calling order, the argument names the call must give,
    firstresult) of a plain call; None when pluggy must make it."""
    spec = getattr(caller, "spec", None)
    if spec is None:
        return None
    opts = getattr(spec, "opts", None) or {}
    if opts.get("historic") or getattr(spec, "kwargdefaults", None) or getattr(caller, "_call_history", None) is not None:
        return None
    steps = []
    need = set(spec.argnames)
    for impl in reversed(impls):
        if impl.hookwrapper or getattr(impl, "wrapper", False) or impl.kwargnames:
            return None
        steps.append((impl.function, tuple(impl.argnames)))
        need.update(impl.argnames)
    return tuple(steps), tuple(need), bool(opts.get("firstresult"))


def fire(caller, **kwargs):
    """``caller(**kwargs)`` (a pluggy hook caller, or anything callable standing in for one), directly when that
    is the same call (see the module doc)."""
    if type(caller) is not _HOOK_CALLER:
        return caller(**kwargs)
    try:
        plain = caller._hookexec.__self__._inner_hookexec is _DEFAULT_EXEC
    except AttributeError:
        plain = False
    if not plain:  # monitored or traced (or not a plugin manager's): pluggy's own call
        return caller(**kwargs)
    impls = caller.get_hookimpls()
    got = _PLANS.get(caller)
    if got is None or got[0] != impls:
        if len(_PLANS) >= 256:  # (callers of plugin managers no longer used: HookCaller takes no weak reference)
            _PLANS.clear()
        got = _PLANS[caller] = (impls, _plan(caller, impls))
    plan = got[1]
    if plan is None:
        return caller(**kwargs)
    steps, need, firstresult = plan
    for name in need:
        if name not in kwargs:  # pluggy's warning or HookCallError
            return caller(**kwargs)
    results = []
    for function, argnames in steps:
        res = function(*[kwargs[a] for a in argnames])
        if res is not None:
            if firstresult:
                return res
            results.append(res)
    return None if firstresult else results
