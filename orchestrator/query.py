"""The `--where` filter language of `ect runs`: `key OP value` terms, parsed and bound as SQL parameters.

A key is a run column (status, label, role, attempts, step, train_flops, ...) or a flattened config
key (`ect.q`, `network.dropout`) or its unique last component (`dropout`). OP is one of
= != < <= > >=. Values are numbers or plain words; nothing typed by the user reaches SQL text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session

from .store import Run, RunParam

TERM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=|!=|<=|>=|<|>)\s*([A-Za-z0-9_.+\-/:]*)\s*$")
RUN_COLUMNS = {c.name for c in Run.__table__.columns} - {"config_json"}


class FilterError(ValueError):
    """A --where term that cannot be parsed or names an unknown key."""


@dataclass(frozen=True)
class Term:
    key: str
    op: str
    value: Any


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None}.get(text.lower(), text)


def parse_where(terms: list[str]) -> list[Term]:
    """Each `--where` string may hold several terms joined by ','."""
    out = []
    for raw in terms:
        for part in raw.split(","):
            m = TERM.match(part)
            if not m:
                raise FilterError(f"--where {part.strip()!r}: expected KEY OP VALUE with OP in = != < <= > >= "
                                  "and a plain value (letters, digits, _ . - + / :)")
            out.append(Term(m.group(1), m.group(2), _value(m.group(3))))
    return out


def _compare(column: Any, op: str, value: Any) -> ColumnElement:
    return {"=": column == value, "!=": column != value, "<": column < value, "<=": column <= value,
            ">": column > value, ">=": column >= value}[op]


def resolve_key(session: Session, key: str) -> str:
    """A run column, an exact config key, or the unique config key ending in `.key`."""
    if key in RUN_COLUMNS:
        return key
    keys = set(session.scalars(select(RunParam.key).distinct()))
    if key in keys:
        return key
    matches = sorted(k for k in keys if k.endswith("." + key))
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise FilterError(f"--where {key!r} is ambiguous: {', '.join(matches[:6])}")
    raise FilterError(f"--where {key!r}: no such run column or config key")


def condition(session: Session, term: Term) -> ColumnElement:
    """The SQL condition on `Run` for one term (values are bound parameters)."""
    key = resolve_key(session, term.key)
    if key in RUN_COLUMNS:
        return _compare(getattr(Run, key), term.op, term.value)
    if isinstance(term.value, (int, float)) and not isinstance(term.value, bool):
        inner = and_(RunParam.key == key, _compare(RunParam.value_num, term.op, float(term.value)))
    elif term.op in ("=", "!="):
        inner = and_(RunParam.key == key, _compare(RunParam.value, term.op, json.dumps(term.value)))
    else:
        raise FilterError(f"--where {term.key}{term.op}{term.value}: order comparisons need a number")
    return Run.run_id.in_(select(RunParam.run_id).where(inner))
