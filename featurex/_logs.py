"""What featurex's processes print: featurex's own warnings, not the libraries' chatter.

transformers and huggingface_hub draw progress bars ("Loading weights", downloads) and print
notices while they load a model; in a Spark job each Python worker would add its own to the
job's output. So the Python workers, and the `featurex` command, keep them quiet unless the
user asks for more: `FEATUREX_LOG_LEVEL=INFO` (or DEBUG) in their environment, or a level of
INFO or lower on the `featurex` logger. A library's own setting (HF_HUB_DISABLE_PROGRESS_BARS,
TRANSFORMERS_VERBOSITY) wins over featurex's.
"""

from __future__ import annotations

import logging
import os
import sys

ENV = "FEATUREX_LOG_LEVEL"
_LOG = logging.getLogger("featurex")
_done = False


def quiet_libraries() -> None:
    """Set featurex's log level from FEATUREX_LOG_LEVEL and, below INFO, silence the model
    libraries' progress bars and notices. Once per process."""
    global _done
    if _done:
        return
    _done = True
    wanted = os.environ.get(ENV, "").strip().upper()
    level = logging.getLevelName(wanted) if wanted else None
    if isinstance(level, int):
        _LOG.setLevel(level)
        if level < logging.WARNING and not _LOG.handlers:  # workers configure no logging
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("featurex %(levelname)s: %(message)s"))
            _LOG.addHandler(handler)
    elif wanted:
        _LOG.warning("ignoring %s=%r: expected DEBUG, INFO, WARNING or ERROR", ENV, wanted)
    if _LOG.getEffectiveLevel() <= logging.INFO:
        return  # asked for: the libraries speak as well
    # Read when these libraries are imported; for one imported already, its own switches.
    bars, verbosity = "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"
    users = {name for name in (bars, verbosity) if name in os.environ}
    os.environ.setdefault(bars, "1")
    os.environ.setdefault(verbosity, "error")
    if "huggingface_hub" in sys.modules and bars not in users:
        from huggingface_hub.utils.tqdm import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules and verbosity not in users:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
