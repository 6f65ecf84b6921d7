"""Evaluation: faithfulness metrics (:mod:`.metrics`) and the planted-token task (:mod:`.planted`)."""

from . import planted
from .metrics import (DEFAULT_REPLACEMENT, METRICS, REPLACEMENTS, Curve, aopc, check_result, comprehensiveness,
                      faithfulness, log_odds, n_top, perturbation_curve, ranking, sufficiency)

__all__ = ["comprehensiveness", "sufficiency", "log_odds", "aopc", "perturbation_curve", "faithfulness", "ranking",
           "n_top", "check_result", "METRICS", "DEFAULT_REPLACEMENT", "REPLACEMENTS", "Curve", "planted"]
