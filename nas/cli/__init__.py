"""The `nas` command line: one module per sub-command, registered in `main.COMMANDS`.

Before anything loads torch (and with it OpenMP), idle OpenMP threads are told to sleep
rather than spin: on a shared machine a spinning thread holds a core another process
needs, and a descheduled one stalls every barrier (nas/threads.py). A value the user
set is kept.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
