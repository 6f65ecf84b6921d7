"""Layer-wise relevance propagation: the reference ``LRP`` class, rules and transformer composites.

>>> from hfattr.lrp import LRP, EpsilonRule, GammaRule   # doctest: +SKIP
>>> LRP(model).attribute(x, target=3)                     # doctest: +SKIP
"""

from .attach import Attachment, attach_rules
from .attribution import LRP
from .composites import COMPOSITES, Composite, build_plan, get_composite
from .rules import (
    Alpha1_Beta0_Rule,
    AttentionRule,
    EpsilonRule,
    GammaRule,
    IdentityRule,
    NormRule,
    ProductRule,
    PropagationRule,
)

__all__ = [
    "LRP",
    "PropagationRule",
    "EpsilonRule",
    "GammaRule",
    "Alpha1_Beta0_Rule",
    "IdentityRule",
    "NormRule",
    "AttentionRule",
    "ProductRule",
    "Composite",
    "COMPOSITES",
    "get_composite",
    "build_plan",
    "attach_rules",
    "Attachment",
]
