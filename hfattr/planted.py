"""``import hfattr.planted``: the documented path of :mod:`hfattr.evaluate.planted` (the same module)."""

import sys

from .evaluate import planted as _planted

sys.modules[__name__] = _planted
