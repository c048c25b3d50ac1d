"""Field documentation of a config dataclass, read from its Google-style `Attributes:` section.

The docstring of `trainers.config.TrainConfig` is the one place a setting is described:
`launch.train --help` (and every flag's absl help) is generated from it here, so a new field
needs one `Attributes:` entry and nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re

_ENTRY = re.compile(r"^(\w+)(?: \([^)]*\))?:\s*(.*)$")


@functools.cache
def attribute_docs(cls) -> dict:
    """Maps each documented attribute of `cls` to its description (one line of text).

    Reads the `Attributes:` section of the class docstring: an entry is `name: text` at the
    section's indentation, continued on more deeply indented lines; the section ends at the
    next line indented like the header or less, or at the next section header.

    Args:
      cls: a class with a Google-style docstring.

    Returns:
      {name: description}, in docstring order; empty without an `Attributes:` section.
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    docs: dict = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return docs
    header_indent = _indent(lines[start])
    entry_indent = None
    name = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = _indent(line)
        if indent <= header_indent:
            break
        if entry_indent is None:
            entry_indent = indent
        match = _ENTRY.match(line.strip())
        if indent == entry_indent and match:
            name = match.group(1)
            docs[name] = match.group(2).strip()
        elif name is not None and indent > entry_indent:
            docs[name] = f"{docs[name]} {line.strip()}".strip()
        else:
            break
    return docs


def undocumented_fields(cls) -> list:
    """Names of the dataclass fields of `cls` that its `Attributes:` section leaves out."""
    docs = attribute_docs(cls)
    return [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
