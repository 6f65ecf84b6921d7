"""The names of the faithfulness metrics and replacements (no torch: the CLI lists them quickly)."""

REPLACEMENTS = ("mask", "pad", "remove")
METRICS = ("comprehensiveness", "sufficiency", "log_odds", "aopc_deletion", "aopc_insertion")
