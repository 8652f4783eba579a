"""`mlops`, the command line over the app's HTTP API (installed as a console script; never deployed).

Module map: main (arguments, exit codes), target (URL, keys, profiles), api (HTTP and what its errors
mean), console (stdout/stderr, JSON), render (tables, times, sizes, bars), progress (a run's stages and
decision), follow (polling a run live), upload (blocks straight to storage through a SAS URL), names
(the app's name rules), commands/ (reads, changes, data, monitoring).
"""
from __future__ import annotations

__version__ = "0.1.0"
