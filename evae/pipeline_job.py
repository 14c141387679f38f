"""What every Snakemake script of workflow/scripts does around its one library call.

    with pipeline_job(snakemake):
        train(...)

Output and logging go to the rule's log file, torch uses the rule's threads, and a failure is
logged before Snakemake marks the job failed: a bad input (a damaged or unrecorded file, a file of
another config, a missing file) as the one paragraph that says what to do, anything else with its
traceback. The log starts with the job's rule and threads; a job that runs a model goes on with the
device it chose (``evae.provenance.pick_device``: the GPU's name, or the CPU's model).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, Iterator


@contextlib.contextmanager
def pipeline_job(smk: Any) -> Iterator[None]:
    from evae.checksums import DamagedFileError
    from evae.config import ConfigError
    from evae.provenance import set_threads

    log_path = smk.log[0] if smk.log else None
    stream = open(log_path, "w", buffering=1) if log_path else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    log = logging.getLogger("evae.pipeline")
    log.info("job %s started: %d thread(s)", smk.rule, smk.threads)
    set_threads(smk.threads)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
    except (DamagedFileError, ConfigError, FileNotFoundError) as err:  # bad input: its message says what to do
        log.error("job %s failed: %s", smk.rule, err)
        raise
    except BaseException:
        log.exception("job %s failed", smk.rule)
        raise
    finally:
        root.removeHandler(handler)
        if log_path:
            stream.close()

