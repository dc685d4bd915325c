"""What differs between the pysparks featurex runs beside, decided by capability, here only.

featurex installs beside the platform's pyspark (3.5 or 4.x, classic or a Spark Connect
client) or none at all, when only the engine is used. Nothing here compares versions: a
missing pyspark is an ImportError, and a Connect column is recognised by its class.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

from .errors import MissingDependencyError, first_line

INSTALL_PYSPARK = (
    'pip install "featurex[spark]" for local Spark, or "featurex[connect]" for a Spark Connect '
    "client; on a cluster (Databricks, EMR, a Spark image) use the pyspark it provides"
)


def missing_pyspark(what: str, exc: ImportError) -> MissingDependencyError:
    """The one-line error for a Spark part of featurex used where pyspark cannot be imported."""
    return MissingDependencyError(f"{what} needs pyspark ({first_line(exc)}): {INSTALL_PYSPARK}")


def is_pyspark_import_error(exc: ImportError) -> bool:
    """Whether `exc` says that pyspark (or one of its modules) is missing, and nothing else."""
    return exc.name is not None and (exc.name == "pyspark" or exc.name.startswith("pyspark."))


def unavailable(what: str, exc: ImportError) -> Callable[..., NoReturn]:
    """A stand-in for a public Spark name when pyspark is missing: using it says what to install.

    `import featurex` works without pyspark (the engine needs none); only the Spark parts fail.
    """
    message = str(missing_pyspark(f"featurex.{what}", exc))

    def stand_in(*args: Any, **kwargs: Any) -> NoReturn:
        raise MissingDependencyError(message)

    stand_in.__name__ = stand_in.__qualname__ = what
    stand_in.__doc__ = message
    return stand_in


def require_pyspark(what: str) -> None:
    """Raise the one-line error naming the install when pyspark cannot be imported."""
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise missing_pyspark(what, exc) from None


def has_arrow_udfs() -> bool:
    """Whether pyspark runs Arrow UDFs (`pyspark.sql.functions.arrow_udf`, pyspark 4.1+).

    Then featurex's UDF takes and returns Arrow arrays, and the features go back as one Arrow
    array over the feature matrix's buffer. A pandas UDF's return value is converted row by
    row, on pyspark 3.5 and 4.x alike (each row's array becomes a Python list before pyarrow
    sees it), so that is the path where Arrow UDFs are missing.
    """
    try:
        from pyspark.sql.pandas.functions import arrow_udf  # noqa: F401
    except ImportError:
        return False
    return True


def is_column(value: object) -> bool:
    """Whether `value` is a pyspark Column, classic or Spark Connect.

    On pyspark 4 both kinds derive from `pyspark.sql.Column`. On 3.5 a Connect column is a
    class of its own; its module is loaded once a Connect session exists, so it is looked up
    in `sys.modules` rather than imported (that import needs grpc).
    """
    from pyspark.sql import Column

    if isinstance(value, Column):
        return True
    connect = sys.modules.get("pyspark.sql.connect.column")
    return connect is not None and isinstance(value, connect.Column)
