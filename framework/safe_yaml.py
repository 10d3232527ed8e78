"""The one YAML loader for every YAML a user names (configs, scenarios, ``--set`` values).

PyYAML's ``safe_load`` builds no Python objects, but it still accepts three kinds
of hostile input that hang or crash whoever walks the result:

* an alias inside its own anchor (``a: &x [*x]``) builds a structure that contains
  itself: any recursive walk ends in ``RecursionError``;
* aliases of aliases ("billion laughs": ten levels of ten) compose into a few
  hundred nodes that expand to 10**9 values when walked or copied;
* very deep nesting (``[[[[...]]]]``) overflows the recursive composer.

:class:`_Composer` refuses all three *while composing*, before anything is
expanded: it keeps, for every anchor, the number of values its node expands to,
adds that number at every alias, and stops as soon as the running total, the
nesting depth or the file size passes a limit. An alias to an anchor that is
still being composed is a cycle. Tags are limited to the standard YAML types:
a ``!!python/...`` tag (or any other tag) is refused with its line.

Limits (documented in docs/config.md, "Limits of YAML files"):

* :data:`MAX_YAML_BYTES`: 256 KiB per file (shipped configs are 1-3 KiB);
* :data:`MAX_YAML_VALUES`: 50,000 values after expanding every alias;
* :data:`MAX_YAML_DEPTH`: 50 levels of nesting.

Scanning and parsing run in libyaml (C) when PyYAML has it, composing in Python
with the checks; a malformed file is parsed again in pure Python for PyYAML's
clearer syntax message. A refusal takes milliseconds whatever the input.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent
from yaml.resolver import Resolver

__all__ = [
    "MAX_YAML_BYTES",
    "MAX_YAML_VALUES",
    "MAX_YAML_DEPTH",
    "YamlRefused",
    "compose_and_load",
    "load_value",
]

MAX_YAML_BYTES = 256 * 1024
MAX_YAML_VALUES = 50_000
MAX_YAML_DEPTH = 50

_PYTHON_TAG = "tag:yaml.org,2002:python/"
_ALLOWED_TAGS = frozenset(t for t in SafeConstructor.yaml_constructors if t is not None)


class YamlRefused(ComposerError):
    """A YAML document refused for its shape (cycle, alias bomb, depth, tag); carries the mark."""


def _short_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


class _Composer(Composer):
    """PyYAML's composer with limits; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._values = 0  # values composed so far, each alias counted as the values it expands to
        self._depth = 0
        self._open: set[str] = set()  # anchors whose node is being composed
        self._sizes: dict[str, int] = {}  # anchor -> values its node expands to

    def _add(self, n: int, mark) -> None:
        self._values += n
        if self._values > MAX_YAML_VALUES:
            raise YamlRefused(None, None, f"more than {MAX_YAML_VALUES:,} values once aliases are expanded "
                              f"(an alias bomb?); the limit is {MAX_YAML_VALUES:,}", mark)

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            event = self.get_event()
            anchor = event.anchor
            if anchor in self._open:
                raise YamlRefused(None, None, f"alias *{anchor} is inside its own anchor &{anchor} "
                                  f"(a cycle)", event.start_mark)
            if anchor not in self.anchors:
                raise ComposerError(None, None, f"found undefined alias *{anchor}", event.start_mark)
            self._add(self._sizes[anchor], event.start_mark)
            return self.anchors[anchor]
        event = self.peek_event()
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!" and tag not in _ALLOWED_TAGS:
            why = ("asks for a Python object; strikebench reads plain data only" if tag.startswith(_PYTHON_TAG)
                   else "is not a standard YAML type")
            raise YamlRefused(None, None, f"tag {_short_tag(tag)} {why}", event.start_mark)
        anchor = event.anchor
        if anchor is not None and anchor in self.anchors:
            raise ComposerError(None, None, f"anchor &{anchor} is defined twice", event.start_mark)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise YamlRefused(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark)
        before = self._values
        self._add(1, event.start_mark)
        if anchor is not None:
            self._open.add(anchor)
        self.descend_resolver(parent, index)
        if self.check_event(ScalarEvent):
            node = self.compose_scalar_node(anchor)
        elif self.check_event(SequenceStartEvent):
            node = self.compose_sequence_node(anchor)
        else:
            assert self.check_event(MappingStartEvent)
            node = self.compose_mapping_node(anchor)
        self.ascend_resolver()
        self._depth -= 1
        if anchor is not None:
            self._open.discard(anchor)
            self._sizes[anchor] = self._values - before
        return node


from yaml.parser import Parser as _PyParser  # noqa: E402
from yaml.reader import Reader  # noqa: E402
from yaml.scanner import Scanner  # noqa: E402


class _PyLoader(_Composer, Reader, Scanner, _PyParser, SafeConstructor, Resolver):
    """All in Python: slower, but PyYAML's syntax messages are clearer than libyaml's."""

    def __init__(self, stream):
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        _PyParser.__init__(self)
        _Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)


try:  # libyaml scans and parses; the Python composer above checks while it builds the node graph
    from yaml._yaml import CParser

    class _CLoader(_Composer, CParser, SafeConstructor, Resolver):
        """Composer methods first in the MRO, so they replace CParser's own C composer."""

        def __init__(self, stream):
            CParser.__init__(self, stream)
            _Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _CLoader = None  # type: ignore[assignment,misc]


def _run(loader_class, text: str, on_node=None) -> tuple[Any, Any]:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if on_node is not None and node is not None:
            on_node(node)  # before construction, which rewrites merge keys (<<) inside the nodes
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return node, data


def compose_and_load(text: str, on_node=None) -> tuple[Any, Any]:
    """(root node, plain data) of one YAML document, refusing hostile shapes.

    ``on_node(root)`` is called with the composed node graph before it is constructed
    (construction flattens merge keys in place).

    :raises YamlRefused: a cycle, an alias bomb, too deep, a non-standard tag (with its mark).
    :raises yaml.YAMLError: any other YAML error (syntax, two documents...).
    """
    if len(text) > MAX_YAML_BYTES:  # callers that read files check the size in bytes first
        raise YamlRefused(None, None, f"longer than the {MAX_YAML_BYTES // 1024} KiB limit of a YAML file", None)
    if _CLoader is None:
        return _run(_PyLoader, text, on_node)
    try:
        return _run(_CLoader, text, on_node)
    except YamlRefused:
        raise
    except yaml.YAMLError as c_error:
        # A malformed document: parse it again in Python (same limits) for PyYAML's clearer message.
        try:
            _run(_PyLoader, text)
        except yaml.YAMLError:
            raise
        raise c_error from None


def load_value(text: str) -> Any:
    """A small YAML value (``--set`` right-hand side, an environment variable): same checks."""
    return compose_and_load(text)[1]
