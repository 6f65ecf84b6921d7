"""Bad input to ``Explainer`` gives a clear error that names what is wrong (and what is expected)."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn

from hfattr import Explainer, list_methods
from hfattr.testing import make_tokenizer, tiny

TEXT = "the movie was great"


@functools.lru_cache(maxsize=None)
def zoo(name: str, task: str = "auto"):
    return tiny(name, task)


@functools.lru_cache(maxsize=None)
def explainer(name: str = "bert", task: str = "auto") -> Explainer:
    return Explainer(*zoo(name, task))


# --------------------------------------------------------------------------- text
@pytest.mark.parametrize("text, where", [("", "text"), ("   \n", "text"), (["a movie", ""], r"text\[1\]")])
def test_empty_text(text, where):
    with pytest.raises(ValueError, match=f"{where} is empty"):
        explainer().explain(text)


def test_empty_list_and_non_text():
    with pytest.raises(ValueError, match="empty list"):
        explainer().explain([])
    with pytest.raises(TypeError, match="text must be a str or a list of str, got int"):
        explainer().explain(5)
    with pytest.raises(TypeError, match=r"text\[1\] must be a str, got NoneType"):
        explainer().explain(["a", None])


def short_tokenizer_explainer() -> Explainer:
    model, _ = zoo("bert")
    return Explainer(model, make_tokenizer("bert", model_max_length=8))


def test_text_longer_than_the_tokenizer_limit_is_an_error():
    long = "the movie was great and the acting was fine"  # 9 words + [CLS], [SEP]
    with pytest.raises(ValueError, match=r"11 tokens.*maximum of 8.*truncation=True"):
        short_tokenizer_explainer().explain(long)
    with pytest.raises(ValueError, match=r"text\[1\] has 11 tokens"):
        short_tokenizer_explainer().explain(["fine", long])
    with pytest.raises(ValueError, match="maximum of 4"):
        explainer().explain(TEXT, max_length=4)


def test_truncation_warns_and_explains_the_truncated_text():
    ex = short_tokenizer_explainer()
    long = "the movie was great and the acting was fine"
    with pytest.warns(UserWarning, match="truncated to 8 tokens"):
        r = ex.explain(long, truncation=True)
    assert r.tokens == ["[CLS]", "the", "movie", "was", "great", "and", "the", "[SEP]"]
    short = ex.explain("the movie was great and the")
    torch.testing.assert_close(r.scores, short.scores, atol=1e-6, rtol=0)
    assert r.scores[-1] == 0


@pytest.mark.parametrize("name, limit_field", [("bert", "max_position_embeddings"), ("gpt2", "n_positions")])
def test_text_longer_than_the_model_limit_is_an_error(name, limit_field):
    # The tokenizer allows 512 (or unlimited) tokens, but the model has only 16 positions.
    model, _ = tiny(name, **{limit_field: 16})
    tok = make_tokenizer(name if name == "bert" else "gpt2", model_max_length=512 if name == "bert" else int(1e30))
    with pytest.raises(ValueError, match="16"):
        Explainer(model, tok).explain("the " * 20)


# --------------------------------------------------------------------------- targets
def test_unknown_label_name_lists_the_labels():
    with pytest.raises(ValueError, match=r"unknown label name 'GOOD'.*\['NEGATIVE', 'POSITIVE'\]"):
        explainer().explain(TEXT, target="GOOD")
    with pytest.raises(ValueError, match="target 5 is out of range for a model with 2 labels"):
        explainer().explain(TEXT, target=5)
    with pytest.raises(TypeError, match="label id or a label name"):
        explainer().explain(TEXT, target=1.5)


def test_target_text_outside_the_vocabulary_names_it():
    with pytest.raises(ValueError, match=r"continuation ' great zzzz'.*outside the vocabulary"):
        explainer("gpt2").explain(TEXT, target=" great zzzz")
    with pytest.raises(ValueError, match=r"target 'zzzz'.*outside the vocabulary"):
        explainer("t5").explain(TEXT, target="zzzz")
    with pytest.raises(ValueError, match="continuation must be a non-empty string"):
        explainer("gpt2").explain(TEXT, target="")
    with pytest.raises(ValueError, match="token id 100000 is outside the vocabulary"):
        explainer("gpt2").explain(TEXT, target=100_000)
    with pytest.raises(TypeError, match="causal-LM target must be None, a token id or a continuation text"):
        explainer("gpt2").explain(TEXT, target=("a",))
    with pytest.raises(TypeError, match="seq2seq target must be None or a target text"):
        explainer("t5").explain(TEXT, target=3)


def test_target_list_of_the_wrong_length():
    with pytest.raises(ValueError, match="target list has 1 entries but 2 texts were given"):
        explainer().explain(["a movie", "a film"], target=[0])
    with pytest.raises(ValueError, match="target list has 3 entries but 1 texts were given"):
        explainer().explain(TEXT, target=[0, 1, 0])


def test_heads_needing_special_targets():
    with pytest.raises(ValueError, match=r"needs a '\[MASK\]' token"):
        explainer("bert", "masked-lm").explain(TEXT)
    with pytest.raises(ValueError, match="gives 2 token.*1 mask token"):
        explainer("bert", "masked-lm").explain("the [MASK] was", target="great movie")
    with pytest.raises(ValueError, match=r"target=\(token_index, label\)"):
        explainer("bert", "token-classification").explain(TEXT)
    with pytest.raises(ValueError, match="token index 10 is out of range for a text of 6 tokens"):
        explainer("bert", "token-classification").explain(TEXT, target=(10, 1))
    with pytest.raises(ValueError, match="cannot tell which output of BertModel"):
        explainer("bert", "base").explain(TEXT)


# --------------------------------------------------------------------------- methods and options
def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown method 'deeplift'") as err:  # ('saliency' is a method now)
        explainer().explain(TEXT, method="deeplift")
    for name in ("ablation", "layer_ablation", "neuron_gradient", *list_methods()):
        assert name in str(err.value)


def test_unknown_option_names_it_and_the_accepted_ones():
    with pytest.raises(TypeError, match=r"method 'ablation' got unknown option\(s\) \['foo'\].*granularity"):
        explainer().explain(TEXT, foo=1)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['site'\].*'sites'"):
        explainer().explain(TEXT, method="layer_ablation", site="blocks.0.mlp")
    with pytest.raises(TypeError, match="site"):
        explainer().explain(TEXT, method="neuron_gradient", neuron=1)  # required option missing


def test_site_pattern_that_matches_nothing():
    with pytest.raises(ValueError, match=r"'blocks\.\*\.nothing' matches no role or module name.*valid roles"):
        explainer().explain(TEXT, method="layer_ablation", sites="blocks.*.nothing")
    with pytest.raises(ValueError, match="'nope' matches no role"):
        explainer().explain(TEXT, method="neuron_gradient", site="nope", neuron=0)
    with pytest.raises(ValueError, match="'mlp' matches 2 modules.*exactly one"):
        explainer().explain(TEXT, method="neuron_gradient", site="mlp", neuron=0)
    with pytest.raises(ValueError, match="in the decoder.*encoder"):
        explainer("t5").explain(TEXT, method="layer_ablation", sites="decoder.mlp")


def test_bad_method_option_values():
    ex = explainer()
    with pytest.raises(ValueError, match="granularity must be 'token' or 'word', got 'sentence'"):
        ex.explain(TEXT, granularity="sentence")
    with pytest.raises(ValueError, match=r"score must be one of \[.*'log_prob', 'logit', 'prob'\], got 'p'"):
        ex.explain(TEXT, score="p")
    opts = dict(method="neuron_gradient", site="blocks.0.mlp")
    with pytest.raises(ValueError, match="reduce must be one of"):
        ex.explain(TEXT, neuron=0, reduce="max", **opts)
    with pytest.raises(ValueError, match="neuron 1000 is out of range for site 'blocks.0.mlp' of width 32"):
        ex.explain(TEXT, neuron=1000, **opts)
    with pytest.raises(TypeError, match="neuron must be an int"):
        ex.explain(TEXT, neuron="3", **opts)
    with pytest.raises(ValueError, match="position 10 is out of range for a text of 6 tokens"):
        ex.explain(TEXT, neuron=0, position=10, **opts)
    with pytest.raises(ValueError, match="position must be 'last', 'all' or an int, got 'first'"):
        ex.explain(TEXT, neuron=0, position="first", **opts)


@pytest.mark.parametrize(
    "baseline, error, match",
    [
        ("blank", ValueError, "baseline must be 'mask', 'pad', 'unk', 'zero' or a token id, got 'blank'"),
        (10**6, ValueError, "baseline token id 1000000 is outside the vocabulary"),
        (-1, ValueError, "baseline token id -1 is outside the vocabulary"),
        (True, TypeError, "not a bool"),
    ],
)
def test_bad_baseline(baseline, error, match):
    with pytest.raises(error, match=match):
        explainer().explain(TEXT, baseline=baseline)


def test_baseline_token_the_tokenizer_lacks():
    with pytest.raises(ValueError, match="baseline='mask' but the tokenizer has no mask token"):
        explainer("gpt2").explain(TEXT, baseline="mask")


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, "4"])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match=f"batch_size must be an int >= 1, got {batch_size!r}"):
        explainer().explain(TEXT, batch_size=batch_size)


def test_chat_needs_a_template():
    with pytest.raises(ValueError, match="chat=True needs a tokenizer with a chat_template"):
        explainer().explain(TEXT, chat=True)


# --------------------------------------------------------------------------- models
class _NoEmbeddingsBert(nn.Module):
    """Wraps a model but reports no input embeddings."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def get_input_embeddings(self):
        return None


def test_model_without_input_embeddings():
    model, tok = zoo("bert")
    with pytest.raises(ValueError, match="_NoEmbeddingsBert has no input embeddings"):
        Explainer(_NoEmbeddingsBert(model), tok)


def test_plain_module_is_refused_clearly():
    _, tok = zoo("bert")
    with pytest.raises((TypeError, ValueError), match="input embeddings"):
        Explainer(nn.Linear(4, 2), tok)


def test_pretrained_model_without_embeddings_is_refused_clearly():
    from transformers import BertConfig, PreTrainedModel

    class NoEmbeddings(PreTrainedModel):
        config_class = BertConfig

        def __init__(self, config):
            super().__init__(config)
            self.lin = nn.Linear(2, 2)

    model = NoEmbeddings(BertConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1, intermediate_size=8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((TypeError, ValueError), match="NoEmbeddings.*input embeddings"):
            Explainer(model, zoo("bert")[1])


def test_bad_model_or_tokenizer_types():
    model, tok = zoo("bert")
    with pytest.raises(TypeError, match="model must be a transformers model"):
        Explainer("bert-base-uncased", tok)
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer"):
        Explainer(model, None)


def test_from_pretrained_unknown_task(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'sentiment'.*known tasks"):
        Explainer.from_pretrained(str(tmp_path), task="sentiment")
