"""``import hfattr.planted``: the documented path of :mod:`hfattr.evaluate.planted` (the same module)."""

import sys

from .evaluate import planted

sys.modules[__name__] = planted
