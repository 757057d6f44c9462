"""Make ``gmmrestore`` importable when the scripts run from a checkout without the package
installed (e.g. in the per-rule conda environments of ``--sdm conda``)."""

import os
import sys

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src")
if os.path.isdir(os.path.join(_SRC, "gmmrestore")) and _SRC not in sys.path:
    sys.path.insert(0, os.path.abspath(_SRC))
