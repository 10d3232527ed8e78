"""``strikebench.engine.hooks.fire``: the engine's frequent hook calls (an order's events and fill, a decision) made
without pluggy's generic layers answer and call exactly as pluggy's own call does, whatever is registered."""

from __future__ import annotations

import warnings

import pluggy
import pytest

from strikebench.engine import hooks as hooks_mod
from strikebench.engine.hooks import fire

spec = pluggy.HookspecMarker("firetest")
impl = pluggy.HookimplMarker("firetest")


class Specs:
    @spec
    def on_event(self, run, order, event):
        """Plain hook."""

    @spec(firstresult=True)
    def first(self, run, x):
        """First result."""

    @spec(historic=True)
    def hist(self, run):
        """Historic."""


def _plugin(name, log, *, answer=None, first=None, tryfirst=False, trylast=False, raises=None, args=3):
    class P:
        if args == 3:
            @impl(tryfirst=tryfirst, trylast=trylast)
            def on_event(self, run, order, event):
                log.append((name, run, order, event))
                if raises:
                    raise raises
                return answer
        elif args == 1:
            @impl(tryfirst=tryfirst, trylast=trylast)
            def on_event(self, order):  # an implementation may take fewer arguments than the spec names
                log.append((name, order))
                return answer
        else:
            @impl
            def on_event(self, run, order, event, extra=None):  # keyword defaults: pluggy's own call
                log.append((name, run, order, event, extra))
                return answer

        @impl
        def first(self, run, x):
            log.append((name, "first", x))
            return first

    return P()


def _both(build, call):
    """The log and answer of a call made by pluggy and by fire on two equal plugin managers."""
    out = []
    for how in ("pluggy", "fire"):
        log = []
        pm = pluggy.PluginManager("firetest")
        pm.add_hookspecs(Specs)
        build(pm, log)
        try:
            got = call(pm, log, how)
        except Exception as e:  # noqa: BLE001 - the same exception either way
            got = ("raised", type(e), str(e))
        out.append((got, log))
    return out


def _call(name, **kw):
    def call(pm, log, how):
        caller = getattr(pm.hook, name)
        return caller(**kw) if how == "pluggy" else fire(caller, **kw)
    return call


CASES = {
    "one": lambda pm, log: pm.register(_plugin("a", log, answer=1)),
    "several, LIFO, some answers None": lambda pm, log: [
        pm.register(_plugin(n, log, answer=a)) for n, a in (("a", 1), ("b", None), ("c", "x"), ("d", 0))],
    "tryfirst / trylast": lambda pm, log: [
        pm.register(_plugin("a", log, answer=1, trylast=True)), pm.register(_plugin("b", log, answer=2)),
        pm.register(_plugin("c", log, answer=3, tryfirst=True))],
    "fewer arguments": lambda pm, log: [pm.register(_plugin("a", log, answer=1, args=1)),
                                        pm.register(_plugin("b", log, answer=2))],
    "keyword defaults": lambda pm, log: [pm.register(_plugin("a", log, answer=1, args=4)),
                                         pm.register(_plugin("b", log, answer=2))],
    "an exception stops the call": lambda pm, log: [
        pm.register(_plugin("a", log, answer=1)), pm.register(_plugin("b", log, raises=KeyError("boom"))),
        pm.register(_plugin("c", log, answer=3))],
    "none registered": lambda pm, log: None,
}


@pytest.mark.parametrize("case", list(CASES))
def test_fire_calls_what_pluggy_calls_in_its_order_and_answers_alike(case):
    (a, log_a), (b, log_b) = _both(CASES[case], _call("on_event", run="R", order=1, event=2))
    assert a == b and log_a == log_b
    assert (log_a == []) == (case == "none registered")


def test_fire_of_a_firstresult_hook_answers_the_first_non_none():
    def build(pm, log):
        for n, f in (("a", 7), ("b", None), ("c", 0), ("d", None)):
            pm.register(_plugin(n, log, first=f))
    (a, log_a), (b, log_b) = _both(build, _call("first", run="R", x=5))
    assert a == b == 0 and log_a == log_b == [("d", "first", 5), ("c", "first", 5)]


def test_fire_goes_through_pluggy_for_wrappers_tracing_missing_arguments_and_historic_hooks():
    log = []
    pm = pluggy.PluginManager("firetest")
    pm.add_hookspecs(Specs)
    pm.register(_plugin("a", log, answer=1))

    class Wrap:
        @impl(wrapper=True)
        def on_event(self, run, order, event):
            log.append("before")
            got = yield
            log.append("after")
            return got + ["wrapped"]

    w = Wrap()
    pm.register(w)
    assert fire(pm.hook.on_event, run=1, order=2, event=3) == [1, "wrapped"]
    assert log == ["before", ("a", 1, 2, 3), "after"]
    pm.unregister(w)
    log.clear()
    assert fire(pm.hook.on_event, run=1, order=2, event=3) == [1]  # unregistered: gone, the plain call again
    assert log == [("a", 1, 2, 3)]
    # a plugin registered between two calls is called by the next
    pm.register(_plugin("b", log, answer=2))
    log.clear()
    assert fire(pm.hook.on_event, run=1, order=2, event=3) == [2, 1]
    # hook-call monitoring sees the call
    seen = []
    undo = pm.add_hookcall_monitoring(lambda name, impls, kw: seen.append(name), lambda *a: None)
    fire(pm.hook.on_event, run=1, order=2, event=3)
    assert seen == ["on_event"]
    undo()
    fire(pm.hook.on_event, run=1, order=2, event=3)
    assert seen == ["on_event"]
    # an argument the spec names left out: pluggy's warning, then its call (the implementation lacks it)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(pluggy.HookCallError):
            fire(pm.hook.on_event, run=1, order=2)
    assert any("cannot be found in this hook call" in str(w.message) for w in caught)
    # a historic hook cannot be called directly, through fire neither
    with pytest.raises(AssertionError):
        fire(pm.hook.hist, run=1)
    # anything else callable standing in for a hook caller (the engine's _NullHook, a test double) is just called
    assert fire(lambda **kw: sorted(kw), run=1, order=2) == ["order", "run"]


def test_fire_takes_the_direct_path_in_the_plain_case(monkeypatch):
    """The plain case does not reach pluggy's dispatch (what makes it cheaper); the rest does."""
    log = []
    pm = pluggy.PluginManager("firetest")
    pm.add_hookspecs(Specs)
    pm.register(_plugin("a", log, answer=1))
    calls = []
    real = pm._inner_hookexec

    def counting(*a):
        calls.append(a[0])
        return real(*a)

    fire(pm.hook.on_event, run=1, order=2, event=3)
    monkeypatch.setattr(hooks_mod, "_DEFAULT_EXEC", real)
    pm._inner_hookexec = counting  # as monitoring would: no longer the default executor -> pluggy's call
    fire(pm.hook.on_event, run=1, order=2, event=3)
    assert calls == ["on_event"]
    pm._inner_hookexec = real
    fire(pm.hook.on_event, run=1, order=2, event=3)
    assert calls == ["on_event"] and len(log) == 3
