"""The one YAML reader of the project: bounded, strict about duplicate keys, and line-aware.

Every YAML file or stored YAML text goes through `read_yaml` / `parse_yaml`. The node tree is composed
ONCE with bounds (file size, nesting depth, aliases, expanded size, no recursive aliases) so that a
hostile file (an alias bomb, 10^5 nested brackets) is refused in one line naming the file, in
milliseconds and a few MB, instead of exhausting memory or Python's recursion limit. A mapping with a
repeated key is refused with both line numbers (YAML itself says the last one silently wins).
The result carries the data and a map from key paths to their 1-based source lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

MAX_BYTES = 256 << 10  # a study or config file is a few KB; parsing 256 KiB takes well under a second
MAX_DEPTH = 48  # nesting of mappings and sequences; real configs nest about 5 deep
MAX_ALIASES = 100  # alias uses per document (anchors are for a few shared blocks)
MAX_NODES = 200_000  # scalars, mappings and sequences after expanding every alias

KeyPath = tuple  # ("variants", 0, "overrides", "ect.q")


class ConfigError(ValueError):
    """A config file that cannot be used; its message is one line per problem, naming file and field."""


@dataclass(frozen=True)
class YamlDoc:
    """A parsed YAML document: its data (None for an empty document) and key path -> source line."""

    data: Any
    lines: dict[KeyPath, int]


class _Refused(Exception):
    """A bound was exceeded at a 1-based line; turned into a ConfigError naming the file."""

    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line, self.message = line, message


try:  # libyaml's event parser: about 30x faster than PyYAML's, and not recursive either
    from yaml.cyaml import CParser

    _EVENTS: tuple[type, ...] = (CParser,)
except ImportError:  # PyYAML built without libyaml
    _EVENTS = (Reader, Scanner, Parser)


class _BoundedLoader(Composer, *_EVENTS, SafeConstructor, Resolver):  # type: ignore[misc]
    """A safe loader: an event parser, then PyYAML's composer, which here counts depth and aliases and
    refuses duplicate mapping keys (libyaml's own composer cannot be bounded from Python)."""

    def __init__(self, text: str):
        if _EVENTS[0] is Reader:
            Reader.__init__(self, text)
            Scanner.__init__(self)
            Parser.__init__(self)
        else:
            CParser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        line = self.peek_event().start_mark.line + 1
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(line, f"more than {MAX_ALIASES} aliases (*name); refusing to expand them")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(line, f"nested more than {MAX_DEPTH} levels deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[str, int] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            line = key.start_mark.line + 1
            if key.value in first:
                raise _Refused(line, f"duplicate key {key.value!r} (first at line {first[key.value]}, again at line {line})")
            first[key.value] = line
        return node


def _expanded_size(root: Node) -> int:
    """Nodes in the tree with every alias expanded, computed once per distinct node (memoised, no
    expansion); a node that contains itself (a recursive alias) is refused."""
    size: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            kids = _children(node)
            size[key] = min(1 + sum(size[id(k)] for k in kids), MAX_NODES + 1)
            continue
        if key in size:
            continue
        if key in open_:
            raise _Refused(node.start_mark.line + 1, "an alias refers to a node that contains it (recursive alias)")
        open_.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)
    return size[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _key_lines(root: Node) -> dict[KeyPath, int]:
    """Each mapping key / sequence item path -> its 1-based line (iterative; bounded by MAX_NODES)."""
    lines: dict[KeyPath, int] = {}
    stack: list[tuple[Node, KeyPath]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, MappingNode):
            for k, v in node.value:
                if isinstance(k, ScalarNode):
                    lines[path + (k.value,)] = k.start_mark.line + 1
                    stack.append((v, path + (k.value,)))
        elif isinstance(node, SequenceNode):
            for i, v in enumerate(node.value):
                lines[path + (i,)] = v.start_mark.line + 1
                stack.append((v, path + (i,)))
    return lines


def parse_yaml(text: str, source: str) -> YamlDoc:
    """Parse one YAML document within the bounds above; any problem is a one-line ConfigError `source:LINE: ...`."""
    if len(text.encode(errors="replace")) > MAX_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_BYTES // 1024} KiB; refusing to parse it")
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return YamlDoc(None, {})
        if _expanded_size(root) > MAX_NODES:
            raise _Refused(root.start_mark.line + 1, f"expands to more than {MAX_NODES} values (aliases)")
        data = loader.construct_document(root)
        # the constructor merged `<<` keys into the nodes: lines are taken from the merged tree
        return YamlDoc(data, _key_lines(root))
    except _Refused as e:
        raise ConfigError(f"{source}:{e.line}: {e.message}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{source}:{mark.line + 1 if mark else '?'}: invalid YAML: {problem}") from None
    except RecursionError:  # not reachable within MAX_DEPTH; kept so no input can print a traceback
        raise ConfigError(f"{source}: nested too deeply") from None
    finally:
        loader.dispose()


def read_yaml(path: Path, what: str = "config file") -> YamlDoc:
    """Read and parse a YAML file (see `parse_yaml`); a missing, oversized or undecodable file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    if path.stat().st_size > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES // 1024} KiB; refusing to parse it")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return parse_yaml(text, str(path))
