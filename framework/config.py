"""YAML run configuration: parse, substitute, override, validate, resolve plugins.

Everything is checked before anything runs. Each error is one line naming the
file, the line, the YAML path (``strategies[0].params.deltas[1]``), the bad value
and what is allowed; the CLI turns it into exit code 2 with no traceback.

Pipeline (:func:`load_config`):

1. read and parse YAML (syntax errors give file, line and column);
2. substitute ``${VAR}`` / ``${VAR:-default}`` in strings; a value that came from the
   environment is shown as its ``${VAR}`` template in every error, never as its value;
3. apply ``--set dotted.path=value`` overrides;
4. validate the top level (:class:`RunConfig`, unknown keys are errors);
5. resolve every plugin name through the registry and validate its ``params``
   with the plugin's own model (:class:`ResolvedConfig`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from strikebench.errors import ConfigError
from strikebench.ml.spec import MLConfig
from strikebench.research.spec import ScenarioSearchConfig, SweepConfig, WalkForwardConfig

__all__ = [
    "RunConfig",
    "PluginRef",
    "StrategyRef",
    "DataConfig",
    "BrokerConfig",
    "ResolvedConfig",
    "ResolvedPlugin",
    "load_config",
    "load_yaml",
    "format_path",
    "validation_error_message",
]

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SCRUB_MIN_LENGTH = 4


# ------------------------------------------------------------------ the model
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PluginRef(_Strict):
    """A plugin chosen by name, with its parameters (validated by the plugin's own model)."""

    name: str = Field(description="registered plugin name (see `strikebench plugins`)")
    params: dict[str, Any] = Field(default_factory=dict, description="the plugin's parameters")


class StrategyRef(PluginRef):
    """A strategy instance; ``id`` tells two instances of one strategy apart."""

    id: str | None = Field(default=None, description="unique id of this instance (default: name)")


class DataConfig(BaseModel):
    """The data section: ``source`` names the feed plugin; every other key is its parameter."""

    model_config = ConfigDict(extra="allow", frozen=True)
    source: str = Field(default="synthetic", description="feed plugin name")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BrokerConfig(BaseModel):
    """The broker plus its fill model and commission schedule.

    The broker's parameters are written either under ``params:`` or flat beside ``name`` (``broker: {name:
    tradier, account: ${TRADIER_ACCOUNT}, token: ${TRADIER_TOKEN}, environment: sandbox}``), not both; either
    way the broker plugin's own model validates them."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(default="backtest", description="broker plugin name")
    params: dict[str, Any] = Field(default_factory=dict)
    fill_model: PluginRef = Field(default_factory=lambda: PluginRef(name="mid_slippage"))
    commission: PluginRef = Field(default_factory=lambda: PluginRef(name="cboe_retail"))

    @property
    def flat_params(self) -> dict[str, Any]:
        """Parameters written beside ``name`` (not under ``params:``)."""
        return dict(self.model_extra or {})


class JournalConfig(_Strict):
    url: str | None = Field(default=None, description="sqlite:///path or postgresql://...; default: journal.sqlite in the run folder")
    # exclude=True: not part of config_hash (the trades are the same either way; an account's config stays the same)
    blocked_decisions: Literal["reason", "full"] = Field(
        default="reason", exclude=True,
        description="a decision a risk rule blocks whatever the entry (open-trade or daily limit, time window, "
                    "tripped breaker): 'reason' records the SKIP and the rules without building a chain; 'full' "
                    "evaluates it and stores its chain slice and candidates (what `ml dataset` learns from)")


class OutputConfig(_Strict):
    dir: str = Field(default="runs", description="parent folder of run folders")
    plots: bool = Field(default=True, description="write equity.png and the HTML report")


class AccountConfig(_Strict):
    dir: str | None = Field(default=None, description="the account folder of `strikebench trade` "
                                                      "(default accounts/NAME)")


class RunConfig(_Strict):
    """A whole run: data, broker, strategies, risk rules, features, journal, output."""

    name: str = Field(description="run name, used in the run folder")
    data: DataConfig = Field(default_factory=DataConfig)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    strategies: list[StrategyRef] = Field(min_length=1, description="at least one strategy")
    risk: list[PluginRef] = Field(default_factory=list, description="risk managers, consulted before every order")
    features: list[PluginRef] = Field(default_factory=list, description="context/feature providers")
    journal: JournalConfig = Field(default_factory=JournalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    account: AccountConfig = Field(default_factory=AccountConfig)
    sweep: SweepConfig | None = Field(default=None, description="parameter sweep (`strikebench sweep`)")
    walk_forward: WalkForwardConfig | None = Field(default=None, description="walk-forward validation "
                                                                             "(`strikebench walk-forward`)")
    scenario_search: ScenarioSearchConfig | None = Field(
        default=None, description="adversarial scenario search (`strikebench scenario search`)")
    ml: MLConfig | None = Field(default=None, description="the ML trade gate's training (`strikebench ml train`)")

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '_', '-', '.' only")
        return v

    @model_validator(mode="after")
    def _research_sections(self) -> "RunConfig":
        if self.walk_forward is not None:
            if self.sweep is None:
                raise ValueError("walk_forward needs a sweep section (the parameters it optimizes in-sample)")
            names = [o.name for o in self.sweep.objectives]
            if self.walk_forward.select is not None and self.walk_forward.select not in names:
                raise ValueError(f"walk_forward.select {self.walk_forward.select!r} is not one of the "
                                 f"sweep objectives ({', '.join(names)})")
        return self


#: sections that describe research around a run, not the run: left out of its hash and of a trial's YAML
RESEARCH_SECTIONS = ("sweep", "walk_forward", "scenario_search", "ml")


@dataclass(frozen=True)
class ResolvedPlugin:
    """A plugin reference bound to its registry entry and validated params."""

    path: str  # YAML path of the reference, e.g. "strategies[0]"
    entry: Any  # strikebench.plugin_manager.PluginEntry
    params: BaseModel
    instance_id: str

    def build(self):
        return self.entry.build(self.params)


@dataclass(frozen=True)
class ResolvedConfig:
    """A validated run config with every plugin resolved; ready to hand to an engine."""

    source_path: str
    config: RunConfig
    text: str  # the YAML as read (before substitution), for the journal
    data: ResolvedPlugin
    broker: ResolvedPlugin
    fill_model: ResolvedPlugin
    commission: ResolvedPlugin
    strategies: tuple[ResolvedPlugin, ...]
    risk: tuple[ResolvedPlugin, ...]
    features: tuple[ResolvedPlugin, ...]
    overrides: tuple[str, ...] = ()  #: the ``--set`` overrides applied, in order
    #: the config the run uses, as YAML: after ``${VAR}`` substitution (environment values shown as their
    #: templates, never their values) and the overrides; what the journal stores as ``config_resolved``
    resolved_text: str = ""

    @property
    def config_hash(self) -> str:
        """A hash of the validated config; a broker's secret parameters (``SecretStr``: a token) are left out, so
        rotating a token keeps an account's configuration the same. The research sections (``sweep``,
        ``walk_forward``, ``scenario_search``) are not part of the run: a trial and its best-config YAML hash alike."""
        exclude = set(RESEARCH_SECTIONS)
        dumped = self.config.model_dump(mode="json", exclude=exclude)
        secrets = _secret_fields(self.broker.params)
        if secrets:
            b = dumped["broker"]
            for where in (b.get("params") or {}, b):
                for k in secrets:
                    if k in where:
                        where[k] = "(secret)"
        return hashlib.sha256(json.dumps(dumped, sort_keys=False, separators=(",", ":"), default=str)
                              .encode()).hexdigest()[:16] if secrets else \
            hashlib.sha256(self.config.model_dump_json(exclude=exclude).encode()).hexdigest()[:16]

    def run_yaml(self) -> str:
        """The config the run uses as ready-to-run YAML, without the research sections (sweep, walk_forward, ...)."""
        data = yaml.safe_load(self.resolved_text) or {}
        for key in RESEARCH_SECTIONS:
            data.pop(key, None)
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _secret_fields(params) -> list[str]:
    from pydantic import SecretStr

    return [k for k in getattr(type(params), "model_fields", {}) if isinstance(getattr(params, k, None), SecretStr)]


# --------------------------------------------------------------- YAML reading
def format_path(loc: Iterable[Any]) -> str:
    """('strategies', 0, 'params', 'deltas', 1) -> 'strategies[0].params.deltas[1]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


class _Source:
    """A parsed YAML document plus where each value sits and which came from the environment."""

    def __init__(self, path: str, text: str, data: Any, lines: dict[tuple, int]):
        self.path = path
        self.text = text
        self.data = data
        self.lines = lines
        self.env_templates: dict[tuple, str] = {}  # YAML location -> "${VAR}" template written there
        self.env_values: dict[str, str] = {}  # substituted text -> its template, to scrub from errors

    def where(self, loc: tuple) -> str:
        loc = tuple(loc)
        while loc and loc not in self.lines:
            loc = loc[:-1]
        line = self.lines.get(loc)
        return f"{self.path}:{line}" if line else self.path

    def shown(self, loc: tuple, value: Any) -> str:
        """The value as it may be shown in an error: env-substituted values stay templates,
        also inside a mapping or list that holds them."""
        text = repr(self._masked(tuple(loc), value))
        return text if len(text) <= 80 else text[:77] + "..."

    def _masked(self, loc: tuple, value: Any) -> Any:
        if loc in self.env_templates:
            return self.env_templates[loc]
        if isinstance(value, dict):
            return {k: self._masked(loc + (k,), v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._masked(loc + (i,), v) for i, v in enumerate(value)]
        return value

    def scrub(self, message: str) -> str:
        """Replace any substituted environment value that a message still carries by its template.

        A plugin's own validator may echo a value (``f"width {self.width}..."``); short values
        are left alone because they cannot be told from ordinary words and numbers.
        """
        for value, template in sorted(self.env_values.items(), key=lambda kv: -len(kv[0])):
            if len(value) >= _SCRUB_MIN_LENGTH and value in message:
                message = message.replace(value, template)
        return message

    def forget_env(self, loc: tuple) -> None:
        """A ``--set`` override replaced the value at ``loc``: it no longer comes from the environment."""
        for key in [k for k in self.env_templates if k[:len(loc)] == loc]:
            del self.env_templates[key]


def _node_lines(node, path: str, loc=(), out=None) -> dict[tuple, int]:
    """Line of every YAML location; a key written twice in one mapping is an error
    (PyYAML would silently keep the last value)."""
    out = {} if out is None else out
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if isinstance(key_node, yaml.ScalarNode) and key != "<<":
                mark = key_node.start_mark
                if key in first_line:
                    raise ConfigError(
                        f"{path}:{mark.line + 1}:{mark.column + 1}: {format_path(loc + (key,))}: "
                        f"duplicate key (first at line {first_line[key]}); keep one"
                    )
                first_line[key] = mark.line + 1
            if not isinstance(key, str):  # a complex key: no line bookkeeping
                continue
            out[loc + (key,)] = key_node.start_mark.line + 1
            _node_lines(value_node, path, loc + (key,), out)
            out[loc + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, path, loc + (i,), out)
    return out


def load_yaml(path: str | os.PathLike, *, what: str = "config", key: str | None = None) -> _Source:
    """Read a YAML file into plain data, with line numbers; one-line errors.

    The file goes through :mod:`strikebench.userfiles` (a folder, FIFO, unreadable,
    binary, non-UTF-8, empty or over-size file is refused) and :mod:`strikebench.safe_yaml`
    (alias cycles and bombs, deep nesting and Python tags are refused).
    """
    from strikebench.safe_yaml import MAX_YAML_BYTES
    from strikebench.userfiles import read_text

    text = read_text(path, what=f"{what} file", key=key, max_bytes=MAX_YAML_BYTES, allow_empty=True)
    return parse_yaml_text(text, str(path), what=what)


def parse_yaml_text(text: str, path: str = "<string>", *, what: str = "config") -> _Source:
    from strikebench.safe_yaml import YamlRefused, compose_and_load

    lines: dict[tuple, int] = {}
    try:
        node, data = compose_and_load(text, on_node=lambda root: lines.update(_node_lines(root, path)))
    except YamlRefused as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError(f"{where}: YAML refused: {exc.problem}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {str(exc).splitlines()[0]}") from None
    if data is None:
        raise ConfigError(f"{path}: the {what} file is empty; expected a mapping of keys")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1: the {what} must be a mapping of keys at the top level, got a {type(data).__name__}"
        )
    return _Source(path, text, data, lines)


# --------------------------------------------------------------- substitution
def _substitute(src: _Source, value: Any, loc: tuple) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(src, v, loc + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(src, v, loc + (i,)) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def repl(m: re.Match) -> str:
        var, default = m.group(1), m.group(2)
        if var in os.environ:
            return os.environ[var]
        if default is not None:
            return default
        raise ConfigError(
            f"{src.where(loc)}: {format_path(loc)}: environment variable {var} is not set "
            f"(set it, or write ${{{var}:-default}})"
        )

    result = _ENV_RE.sub(repl, value)
    src.env_templates[loc] = value
    for m in _ENV_RE.finditer(value):
        if m.group(1) in os.environ:
            src.env_values[os.environ[m.group(1)]] = "${" + m.group(1) + "}"
    # A whole-value reference may carry a number or boolean ("${PORT}" -> 7497).
    if _ENV_RE.fullmatch(value.strip()):
        try:
            parsed = _load_value(result)
        except yaml.YAMLError:
            return result
        if isinstance(parsed, (int, float, bool)):
            return parsed
    return result


# ------------------------------------------------------------------ overrides
def _load_value(text: str) -> Any:
    from strikebench.safe_yaml import load_value

    return load_value(text)


_SEG_RE = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(key: str) -> tuple:
    """``strategies[0].params.width`` (or ``strategies.0.params.width``) -> ``('strategies', 0, 'params', 'width')``."""
    loc: list[Any] = []
    for m in _SEG_RE.finditer(key.strip()):
        name, index = m.groups()
        if index is not None:
            loc.append(int(index))
        elif name.isdigit():
            loc.append(int(name))
        else:
            loc.append(name)
    return tuple(loc)


def _parse_override(item: str) -> tuple[tuple, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected dotted.path=value")
    key, raw = item.split("=", 1)
    loc = parse_path(key)
    if not loc:
        raise ConfigError(f"--set {item!r}: empty path")
    try:
        value = _load_value(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return loc, value


def _default_at(loc: tuple) -> Any:
    """What :class:`RunConfig` uses at ``loc`` when the YAML leaves it out, as plain data (or None).

    ``--set broker.fill_model.params.k=0.5`` on a config without a ``broker`` section must
    tune the default fill model, not create a nameless one.
    """
    default: Any = None
    model: Any = RunConfig
    for part in loc:
        if default is not None:
            if not isinstance(default, dict) or part not in default:
                return None
            default = default[part]
            continue
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or field.is_required():
            return None
        value = field.get_default(call_default_factory=True)
        default = value.model_dump() if isinstance(value, BaseModel) else copy.deepcopy(value)
    return default


def _apply_override(data: dict, loc: tuple, value: Any, item: str) -> None:
    node: Any = data
    for i, part in enumerate(loc[:-1]):
        nxt = loc[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError(f"--set {item!r}: {format_path(loc[:i + 1])} does not exist")
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {format_path(loc[:i])} is not a mapping")
            if part not in node or node[part] is None:
                default = _default_at(loc[:i + 1])
                node[part] = default if default is not None else [] if isinstance(nxt, int) else {}
            node = node[part]
    last = loc[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"--set {item!r}: {format_path(loc)} does not exist")
        node[last] = value
    else:
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {format_path(loc[:-1])} is not a mapping")
        node[last] = value


# ------------------------------------------------------------------ validation
def validation_error_message(src: _Source, exc: ValidationError, prefix: tuple = ()) -> str:
    """One line for the first error of a pydantic ValidationError, with file:line and YAML path."""
    err = exc.errors()[0]
    loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    path = format_path(loc)
    etype = err["type"]
    if etype == "missing":
        problem = f"missing required key '{loc[-1]}'"
        path = format_path(loc[:-1])
    elif etype == "extra_forbidden":
        problem = f"unknown key '{loc[-1]}'"
        allowed = _allowed_keys(exc, err)
        if allowed:
            problem += f" (allowed: {', '.join(allowed)})"
        path = format_path(loc[:-1])
    elif etype in _MAPPING_ERRORS:
        problem = f"{src.shown(loc, err.get('input'))} is not allowed: expected a mapping of keys, " \
                  f"got {_what(err.get('input'))}"
    elif etype == "list_type":
        problem = f"{src.shown(loc, err.get('input'))} is not allowed: expected a list, got {_what(err.get('input'))}"
    else:
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if etype == "value_error" and isinstance(err.get("input"), dict):
            # A rule across several keys of one mapping: its message names the values.
            problem = msg
        else:
            problem = f"{src.shown(loc, err.get('input'))} is not allowed: {msg}"
    more = len(exc.errors()) - 1
    tail = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{src.where(loc)}: {path}: {problem}{tail}"


_MAPPING_ERRORS = ("model_type", "model_attributes_type", "dict_type")
_YAML_KINDS = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
               float: "a number", type(None): "nothing (null)"}


def _what(value: Any) -> str:
    return _YAML_KINDS.get(type(value), f"a {type(value).__name__}")


def _allowed_keys(exc: ValidationError, err: dict) -> list[str]:
    model = getattr(exc, "_strikebench_model", None)
    if model is None:
        return []
    # Walk the model along the error's location to the mapping that got the unknown key.
    current: Any = model
    for part in err["loc"][:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or ()
        candidates = [ann, *args]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    if current is None:
        return []
    also = getattr(exc, "_strikebench_also_allowed", ()) if len(err["loc"]) == 1 else ()
    return sorted({*current.model_fields, *also})


def _validate(src: _Source, model: type[BaseModel], data: Any, prefix: tuple = (),
              also_allowed: tuple[str, ...] = ()) -> BaseModel:
    """``also_allowed``: keys of the same YAML mapping that are not the model's (``data.source``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        exc._strikebench_model = model  # type: ignore[attr-defined]
        exc._strikebench_also_allowed = also_allowed  # type: ignore[attr-defined]
        raise ConfigError(validation_error_message(src, exc, prefix)) from None


def _resolve(src: _Source, registry, kind: str, name: str, params: dict, loc: tuple,
             instance_id: str | None = None, *, name_key: str = "name", params_loc: tuple | None = None,
             also_allowed: tuple[str, ...] = ()) -> ResolvedPlugin:
    entry = registry.get(kind, name)
    if entry is None:
        known = registry.names(kind)
        elsewhere = [e.kind for e in registry.find(name)]
        hint = f" ('{name}' is a {elsewhere[0]})" if elsewhere else ""
        raise ConfigError(
            f"{src.where(loc + (name_key,))}: {format_path(loc + (name_key,))}: unknown {kind.replace('_', ' ')} "
            f"'{name}'{hint}; known: {', '.join(known) or '(none registered)'}"
        )
    params_loc = params_loc if params_loc is not None else loc + ("params",)
    validated = _validate(src, entry.params_model, params, params_loc, also_allowed)
    return ResolvedPlugin(format_path(loc), entry, validated, instance_id or name)


def load_config(path: str | os.PathLike, overrides: Iterable[str] = (), registry=None,
                values: dict[str, Any] | None = None) -> ResolvedConfig:
    """Read, substitute, override, validate and resolve a run config.

    :param path: the YAML file.
    :param overrides: ``dotted.path=value`` strings (``--set``), applied after substitution.
    :param registry: the plugin registry (default: a fresh :func:`get_plugin_manager`'s).
    :param values: ``dotted.path -> value`` applied after the overrides, values as they are (a sweep
        trial's parameters); when given, the ``sweep`` section's spaces are not checked again.
    :raises ConfigError: one line naming file, line, YAML path, value and what is allowed.
    """
    src = load_yaml(path)
    try:
        return _load(src, path, overrides, registry, values)
    except ConfigError as exc:
        raise ConfigError(src.scrub(str(exc))) from None


def _load(src: _Source, path, overrides: Iterable[str], registry, values: dict[str, Any] | None = None
          ) -> ResolvedConfig:
    data = _substitute(src, src.data, ())
    overrides = tuple(overrides)
    for item in overrides:
        loc, value = _parse_override(item)
        _apply_override(data, loc, value, item)
        src.forget_env(loc)
    base = copy.deepcopy(data) if values is None else None
    for key, value in (values or {}).items():
        loc = parse_path(key)
        _apply_override(data, loc, copy.deepcopy(value), key)
        src.forget_env(loc)
    resolved_text = yaml.safe_dump(src._masked((), data), sort_keys=False, default_flow_style=False)
    cfg: RunConfig = _validate(src, RunConfig, data)  # type: ignore[assignment]
    if registry is None:
        from strikebench.plugin_manager import get_plugin_manager

        registry = get_plugin_manager().registry

    data_ref = _resolve(src, registry, "feed", cfg.data.source, cfg.data.params, ("data",),
                        name_key="source", params_loc=("data",), also_allowed=("source",))
    flat = cfg.broker.flat_params
    if flat and cfg.broker.params:
        raise ConfigError(f"{src.where(('broker', next(iter(flat))))}: broker: parameters both under `params:` and "
                          f"beside `name` ({', '.join(sorted(flat))}); write them one way")
    if flat:  # broker: {name: tradier, account: ..., token: ...}
        broker = _resolve(src, registry, "broker", cfg.broker.name, flat, ("broker",), params_loc=("broker",),
                          also_allowed=("name", "params", "fill_model", "commission"))
    else:
        broker = _resolve(src, registry, "broker", cfg.broker.name, cfg.broker.params, ("broker",))
    fill = _resolve(src, registry, "fill_model", cfg.broker.fill_model.name, cfg.broker.fill_model.params,
                    ("broker", "fill_model"))
    commission = _resolve(src, registry, "commission", cfg.broker.commission.name,
                          cfg.broker.commission.params, ("broker", "commission"))
    strategies = []
    seen_ids: dict[str, int] = {}
    for i, ref in enumerate(cfg.strategies):
        sid = ref.id or ref.name
        if sid in seen_ids:
            raise ConfigError(
                f"{src.where(('strategies', i))}: strategies[{i}]: strategy id '{sid}' is already used by "
                f"strategies[{seen_ids[sid]}]; give one of them a distinct `id`"
            )
        seen_ids[sid] = i
        strategies.append(_resolve(src, registry, "strategy", ref.name, ref.params, ("strategies", i), sid))
    risk = tuple(_resolve(src, registry, "risk_manager", r.name, r.params, ("risk", i))
                 for i, r in enumerate(cfg.risk))
    features = tuple(_resolve(src, registry, "context_provider", f.name, f.params, ("features", i))
                     for i, f in enumerate(cfg.features))
    if cfg.sweep is not None and base is not None:
        _check_spaces(src, path, base, cfg.sweep, registry)
    if cfg.scenario_search is not None and base is not None:
        from strikebench.research.scenario_search import check_search_section

        check_search_section(src, cfg)
    return ResolvedConfig(
        source_path=str(path), config=cfg, text=src.text, data=data_ref, broker=broker, fill_model=fill,
        commission=commission, strategies=tuple(strategies), risk=risk, features=features,
        overrides=overrides, resolved_text=resolved_text,
    )


def _check_spaces(src: _Source, path, data: dict, sweep, registry) -> None:
    """Each space's path and edge values (both ends, every choice) make a valid config on their own."""
    for key, space in sweep.space.items():
        loc = parse_path(key)
        where = src.where(("sweep", "space", key))
        if not loc:
            raise ConfigError(f"{where}: sweep.space: empty path")
        for value in space.edge_values():
            trial = copy.deepcopy(data)
            for section in RESEARCH_SECTIONS:
                trial.pop(section, None)
            try:
                _apply_override(trial, loc, value, key)
                probe = _Source(src.path, src.text, trial, {})
                _load(probe, path, (), registry, {})
            except ConfigError as exc:
                problem = str(exc).split(": ", 1)[-1] if str(exc).startswith((str(path), "--set ")) else str(exc)
                raise ConfigError(f"{where}: sweep.space.{key}: with {value!r}: {problem}") from None
