"""The pluggy host: one factory, the registry of named components, and plugin loading.

Order of work in :func:`get_plugin_manager` (nothing happens at import time):

1. add the hook specs (:mod:`strikebench.hookspecs`);
2. register the built-in plugin modules -- they use the same hooks as anyone else;
3. load third-party plugins from the ``strikebench`` entry-point group, filtered
   by ``STRIKEBENCH_LOAD_PLUGINS`` (comma-separated distribution or entry-point
   names; empty = none; unset = all) -- the way out when a broken plugin stops start-up;
4. ``check_pending()`` so a misspelled hook name is an error, not silence;
5. call every ``register_*`` hook, one implementation at a time, so each
   component is attributed to the plugin and distribution that registered it.
   Two components claiming one name of one kind is an error naming both.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import os
import re
from dataclasses import dataclass
from typing import Iterable

import pluggy

from strikebench import hookspecs
from strikebench.api import PLUGIN_KINDS, Plugin, PluginParams
from strikebench.errors import PluginError

ENTRY_POINT_GROUP = "strikebench"
LOAD_ENV = "STRIKEBENCH_LOAD_PLUGINS"

#: Built-in plugin modules, registered exactly as third-party plugins are.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "strikebench.plugins.fill_models",
    "strikebench.plugins.commissions",
    "strikebench.plugins.risk_managers",
    "strikebench.plugins.ml_gate",
    "strikebench.plugins.features",
    "strikebench.plugins.journal",
    "strikebench.feeds.builtin",
    "strikebench.feeds.files",
    "strikebench.feeds.databento",
    "strikebench.feeds.tradier",
    "strikebench.feeds.ibkr",
    "strikebench.brokers.builtin",
    "strikebench.strategies.builtin",
)

__all__ = ["get_plugin_manager", "PluginEntry", "Registry", "ENTRY_POINT_GROUP", "LOAD_ENV"]


@dataclass(frozen=True)
class PluginEntry:
    """One named component: what it is, where it came from and how to build it."""

    kind: str
    name: str
    cls: type[Plugin]
    plugin: str  # the pluggy plugin (module / entry point) that registered it
    distribution: str
    version: str

    @property
    def params_model(self) -> type[PluginParams]:
        return self.cls.Params

    @property
    def summary(self) -> str:
        return self.cls.summary()

    def build(self, params: PluginParams | None = None) -> Plugin:
        return self.cls(params if params is not None else self.cls.Params())


class Registry:
    """Named components per kind (strategy, feed, fill_model, ...)."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, PluginEntry]] = {kind: {} for kind, _ in PLUGIN_KINDS.values()}

    def add(self, entry: PluginEntry) -> None:
        existing = self._entries[entry.kind].get(entry.name)
        if existing is not None:
            raise PluginError(
                f"{entry.kind} name '{entry.name}' is claimed twice: by plugin '{existing.plugin}' "
                f"(distribution {existing.distribution} {existing.version}) and by plugin "
                f"'{entry.plugin}' (distribution {entry.distribution} {entry.version}); "
                f"uninstall one or exclude it with {LOAD_ENV}"
            )
        self._entries[entry.kind][entry.name] = entry

    def get(self, kind: str, name: str) -> PluginEntry | None:
        return self._entries[kind].get(name)

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str | None = None) -> list[PluginEntry]:
        kinds = [kind] if kind else list(self._entries)
        return [self._entries[k][n] for k in kinds for n in sorted(self._entries[k])]

    def find(self, name: str) -> list[PluginEntry]:
        """Every entry of any kind with this name."""
        return [e for k in self._entries for n, e in self._entries[k].items() if n == name]


class StrikebenchPluginManager(pluggy.PluginManager):
    """A pluggy PluginManager that also carries the component registry."""

    registry: Registry
    distributions: dict[str, tuple[str, str]]  # plugin name -> (distribution, version)


def _own_version() -> str:
    try:
        return md.version("strikebench")
    except md.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def _normalized(name: str) -> str:
    """PEP 503 form, so ``sb_demo_plugin``, ``SB-Demo-Plugin`` and ``sb.demo.plugin`` are one name."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _selected(env_value: str | None, ep: md.EntryPoint) -> bool:
    if env_value is None:
        return True
    wanted = {_normalized(w) for w in env_value.split(",") if w.strip()}
    dist = ep.dist.name if ep.dist else ""
    return _normalized(ep.name) in wanted or (bool(dist) and _normalized(dist) in wanted)


def _load_entry_points(pm: StrikebenchPluginManager) -> None:
    env_value = os.environ.get(LOAD_ENV)
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if not _selected(env_value, ep):
            continue
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        if pm.has_plugin(ep.name):
            existing = pm.distributions.get(ep.name, ("?", "?"))
            raise PluginError(
                f"plugin name '{ep.name}' is used by distribution {existing[0]} {existing[1]} "
                f"and by distribution {dist} {version}"
            )
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party import must not be a traceback
            reason = " ".join(str(exc).split())  # one line, however the exception formats itself
            raise PluginError(
                f"plugin '{ep.name}' (distribution {dist} {version}) failed to load: "
                f"{type(exc).__name__}: {reason}; start without it by setting "
                f"{LOAD_ENV} to the plugins you want (empty for none)"
            ) from exc
        pm.distributions[ep.name] = (dist, version)
        _register(pm, plugin, ep.name)


def _register(pm: StrikebenchPluginManager, plugin: object, name: str) -> None:
    """pm.register, with pluggy's complaints (a hookimpl taking an argument its hook does not
    offer, one module registered twice) turned into one line naming the plugin and distribution."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        dist, version = pm.distributions.get(name, ("?", "?"))
        # pluggy's message: "Plugin .. for hook ..\nhookimpl definition: ..\nArgument(s) .. hookspec"
        detail = "; ".join(str(exc).splitlines()[1:]) or str(exc)
        raise PluginError(f"plugin '{name}' (distribution {dist} {version}) cannot be registered: {detail}") from None
    except ValueError as exc:
        dist, version = pm.distributions.get(name, ("?", "?"))
        other = pm.get_name(plugin)
        if other is None:
            raise PluginError(f"plugin '{name}' (distribution {dist} {version}) cannot be registered: {exc}") from None
        raise PluginError(
            f"plugin '{name}' (distribution {dist} {version}) is the same module as plugin '{other}' "
            f"(distribution {' '.join(pm.distributions.get(other, ('?', '?')))}); register it once"
        ) from None


def _check_pending(pm: StrikebenchPluginManager) -> None:
    known = [name for name in dir(hookspecs) if not name.startswith("_") and hasattr(
        getattr(hookspecs, name), "strikebench_spec")]
    for name in dir(pm.hook):
        if name.startswith("_"):
            continue
        caller = getattr(pm.hook, name)
        if not isinstance(caller, pluggy.HookCaller) or caller.spec is not None:
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
            dist, version = pm.distributions.get(plugin_name, ("?", "?"))
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise PluginError(
                f"plugin '{plugin_name}' (distribution {dist} {version}) implements unknown hook "
                f"'{name}'{hint}"
            )
    pm.check_pending()  # belt and braces: pluggy's own check


def _collect_registrations(pm: StrikebenchPluginManager) -> Registry:
    registry = Registry()
    for hook_name, (kind, base) in PLUGIN_KINDS.items():
        caller = getattr(pm.hook, hook_name)
        for impl in caller.get_hookimpls():  # registration order: built-ins first, then entry points
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
            dist, version = pm.distributions.get(plugin_name, ("?", "?"))

            def register(cls, name: str | None = None, *, _kind=kind, _base=base,
                         _plugin=plugin_name, _dist=dist, _version=version) -> None:
                if not (isinstance(cls, type) and issubclass(cls, _base)):
                    raise PluginError(
                        f"plugin '{_plugin}' (distribution {_dist} {_version}) registered {cls!r} "
                        f"as a {_kind}, but it is not a subclass of strikebench.api.{_base.__name__}"
                    )
                reg_name = name or cls.name
                if not reg_name:
                    raise PluginError(
                        f"plugin '{_plugin}' (distribution {_dist} {_version}) registered "
                        f"{cls.__qualname__} without a name (set the class attribute `name`)"
                    )
                registry.add(PluginEntry(_kind, reg_name, cls, _plugin, _dist, _version))

            try:
                # pluggy passes only the arguments an implementation names; so do we.
                impl.function(**{arg: register for arg in impl.argnames if arg == "register"})
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin '{plugin_name}' (distribution {dist} {version}) raised in {hook_name}: "
                    f"{type(exc).__name__}: {' '.join(str(exc).split())}; start without it by setting "
                    f"{LOAD_ENV} to the plugins you want (empty for none)"
                ) from exc
    return registry


def get_plugin_manager(*, builtins: Iterable[str] = BUILTIN_PLUGINS,
                       load_entry_points: bool = True) -> StrikebenchPluginManager:
    """Build the plugin manager: specs, built-ins, entry points, checks, registry.

    :param builtins: module names of the built-in plugins (tests may pass fewer).
    :param load_entry_points: load third-party plugins from the ``strikebench`` group.
    :raises PluginError: a plugin failed to import, implements an unknown hook,
        raised while registering, or claims a name another plugin already has.
    """
    pm = StrikebenchPluginManager(hookspecs.PROJECT)
    pm.distributions = {}
    pm.add_hookspecs(hookspecs)
    own = ("strikebench", _own_version())
    for module_name in builtins:
        module = importlib.import_module(module_name)
        pm.distributions[module_name] = own
        _register(pm, module, module_name)
    if load_entry_points:
        _load_entry_points(pm)
    _check_pending(pm)
    pm.registry = _collect_registrations(pm)
    return pm
