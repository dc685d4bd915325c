"""Options named in the words of the interface in use (a leaf module: no imports of ours).

An error says what to pass, and a user reads it in the interface they typed into: the same
ConfigError names `weights=None` in Python, `--weights none` on the command line and
`weights='none'` for `ImageFeaturizer`. Messages name options with `opt("weights", None)`;
each interface puts its own `Words` in place with `speaking(...)` around the calls that
validate (the CLI's commands, the Transformer's methods). Python's keywords are the default.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Final


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


class Words:
    """Python's keywords: `batch_size`, `weights=None`, `device='cpu'`."""

    def option(self, name: str, value: object = UNSET) -> str:
        return name if value is UNSET else f"{name}={value!r}"


class FlagWords(Words):
    """The command line's flags: `--batch-size`, `--weights none`, `--device cpu`,
    `--fast-decode` / `--no-fast-decode`. An option with no flag keeps its Python keyword."""

    def __init__(
        self, flags: Mapping[str, str], switches: frozenset[str], negatable: frozenset[str]
    ) -> None:
        self.flags = flags  # option -> its flag, "--batch-size"
        self.switches = switches  # options set by the flag alone: --normalize, --fast-decode
        self.negatable = negatable  # those of them with a --no-FLAG: --no-fast-decode

    def option(self, name: str, value: object = UNSET) -> str:
        flag = self.flags.get(name)
        if flag is None:
            return super().option(name, value)
        if value is UNSET:
            return flag
        if isinstance(value, bool) and name in self.switches:
            if value:
                return flag
            return f"--no-{flag.removeprefix('--')}" if name in self.negatable else f"no {flag}"
        if value is None:  # "none" is the CLI's word for no weights; elsewhere, no flag
            return f"{flag} none" if name == "weights" else f"no {flag}"
        return f"{flag} {shlex.quote(str(value))}"


class ParamWords(Words):
    """A pyspark.ml stage's params: `batchSize`, `weights='none'`, `fastDecode=True`."""

    def __init__(self, params: Mapping[str, str]) -> None:
        self.params = params  # option -> its param, "batchSize"

    def option(self, name: str, value: object = UNSET) -> str:
        param = self.params.get(name, name)
        if value is UNSET:
            return param
        if value is None:  # params hold no None: "none" for weights, else left unset
            return f"{param}='none'" if name == "weights" else f"{param} unset"
        return f"{param}={value!r}"


PYTHON: Final = Words()
_CURRENT: ContextVar[Words | None] = ContextVar("featurex_words", default=None)


def opt(name: str, value: object = UNSET) -> str:
    """Option `name` (an `ExtractorConfig` field or another keyword), set to `value` if
    given, as the interface in use spells it."""
    return (_CURRENT.get() or PYTHON).option(name, value)


@contextlib.contextmanager
def speaking(words: Words) -> Iterator[None]:
    """Messages made inside name options in `words`."""
    token = _CURRENT.set(words)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def camel(name: str) -> str:
    """A Python keyword as a pyspark.ml param: batch_size -> batchSize."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)
