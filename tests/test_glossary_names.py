"""Names of docs/glossary.md: ``Prepared.target_values()`` / ``step_stats()`` against a direct
computation; the old names (``scores()``, ``step_scores()``) warn and give the same values."""

from __future__ import annotations

import pytest
import torch

from hfattr.hf.prepare import prepare
from hfattr.hf.text import encode


@pytest.fixture(scope="module")
def prep(bert64_explainer):
    model, tok = bert64_explainer.model, bert64_explainer.tokenizer
    enc, _ = encode(tok, ["a fine film", "dull"])
    return prepare(model, tok, enc, [1, 0], score="prob")


def _direct_logits(prep):
    with torch.no_grad():
        return prep.model(input_ids=prep.enc.input_ids, attention_mask=prep.enc.attention_mask).logits


def test_target_values_are_the_score_at_the_input(prep):
    probs = _direct_logits(prep).softmax(-1)
    want = probs[torch.arange(2), torch.tensor([1, 0])].unsqueeze(1)  # (B, R = 1)
    torch.testing.assert_close(prep.target_values(), want, atol=1e-12, rtol=0)
    logits = _direct_logits(prep)[torch.arange(2), torch.tensor([1, 0])].unsqueeze(1)
    torch.testing.assert_close(prep.target_values(score="logit"), logits, atol=1e-12, rtol=0)
    with pytest.warns(DeprecationWarning, match="target_values"):
        old = prep.scores()
    torch.testing.assert_close(old, want, atol=1e-12, rtol=0)


def test_step_stats_are_the_target_ids_probability_and_rank(prep):
    logp = _direct_logits(prep).log_softmax(-1)
    ids = torch.tensor([1, 0])
    stats = prep.step_stats()
    torch.testing.assert_close(stats["log_prob"][:, 0], logp[torch.arange(2), ids], atol=1e-12, rtol=0)
    torch.testing.assert_close(stats["probability"][:, 0], logp[torch.arange(2), ids].exp(), atol=1e-12, rtol=0)
    want_rank = (logp > logp[torch.arange(2), ids].unsqueeze(-1)).sum(-1) + 1
    assert stats["rank"][:, 0].tolist() == want_rank.tolist()
    with pytest.warns(DeprecationWarning, match="step_stats"):
        old = prep.step_scores()
    assert old.keys() == stats.keys()
    for k in stats:
        torch.testing.assert_close(old[k], stats[k])
