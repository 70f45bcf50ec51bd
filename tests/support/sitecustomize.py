"""Makes a scaler worker fail at start-up, to test how the supervisor reports it.

Put this directory on ``PYTHONPATH`` and set ``SCALER_TEST_WORKER_EXIT`` to
an exit code: every ``python -m scaler worker`` started with that
environment then writes one line to stderr and exits with that code
before it imports anything of scaler.  Other commands are left alone.
"""

import os
import sys

_code = os.environ.get("SCALER_TEST_WORKER_EXIT")
if _code and "worker" in sys.orig_argv:
    sys.stderr.write("worker refused to start: disk quota exceeded\n")
    sys.stderr.flush()
    os._exit(int(_code))
