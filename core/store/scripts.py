"""The Lua scripts of the batch write, read from ``navstream/store/lua/*.lua``.

Each op (PUTLATEST, PUTFIELDS, STAMP, XADDFIRST, XADDONCE) is written once in Lua, as local
functions in its own file. The batch script is every op's file followed by ``batch.lua``, which
checks and runs a whole batch; an op's script on its own (for the pipelined path) is its file
followed by ``run_<op>.lua``, which calls its function with ``KEYS`` and ``ARGV``.
"""

from __future__ import annotations

import functools
from importlib import resources

#: The op of each file, in the order the batch script loads them.
OP_FILES = {
    "PUTLATEST": "put_latest",
    "PUTFIELDS": "put_fields",
    "STAMP": "stamp",
    "XADDFIRST": "xadd_first",
    "XADDONCE": "xadd_once",
}


@functools.cache
def lua(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return resources.files("navstream.store").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


@functools.cache
def batch_script() -> str:
    """The script that checks, writes and acknowledges a whole batch in one call."""
    return "".join(lua(name) for name in OP_FILES.values()) + lua("batch")


@functools.cache
def op_script(op: str) -> str:
    """The script that runs one op on its own, with its keys as ``KEYS``."""
    name = OP_FILES[op]
    return lua(name) + lua(f"run_{name}")
