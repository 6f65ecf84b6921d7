"""hf/heads.py is the one table of heads and tasks: loading, targets, metrics and the zoo agree with it."""

from __future__ import annotations

import types

import pytest
import transformers

from hfattr import testing
from hfattr.evaluate import metrics
from hfattr.hf import heads, loading, targets
from hfattr.hf.targets import head_kind
from hfattr.hf.text import encode
from hfattr.testing import ZOO, tiny_model


def test_the_tables_are_consistent():
    assert set(heads.HEAD_SUFFIXES.values()) == set(heads.HEAD_KINDS) == set(heads.HEAD_TASKS)
    assert set(heads.HEAD_TASKS.values()) == set(heads.AUTO_CLASSES)
    assert set(heads.TASK_ALIASES.values()) <= set(heads.AUTO_CLASSES)
    assert set(heads.TARGET_HEADS.values()) <= set(heads.HEAD_KINDS)
    for auto in heads.TASKS.values():
        assert hasattr(transformers, auto), auto
    assert len(heads.TASKS) == len(heads.AUTO_CLASSES) + len(heads.TASK_ALIASES)


def test_users_share_the_table():
    assert loading.TASKS is heads.TASKS
    assert testing.TASKS == {"base": "AutoModel", **heads.AUTO_CLASSES}
    assert set(metrics._KIND_HEAD) < set(heads.TARGET_HEADS)
    assert all(metrics._KIND_HEAD[k] == heads.TARGET_HEADS[k] for k in metrics._KIND_HEAD)


@pytest.mark.parametrize("name,task", [(n, t) for n in ZOO for t in ZOO[n] if t != "base"])
def test_zoo_heads_round_trip(name, task):
    model = tiny_model(name, task, num_layers=1)
    kind = head_kind(model)
    assert heads.head_of_class_name(type(model).__name__) == kind
    assert heads.HEAD_TASKS[kind] == task
    config = types.SimpleNamespace(architectures=[type(model).__name__])
    assert heads.task_from_config(config) == task


def test_task_from_config_without_architectures():
    ns = types.SimpleNamespace
    assert heads.task_from_config(ns(is_encoder_decoder=True)) == "seq2seq"
    assert heads.task_from_config(ns(id2label={0: "a", 1: "b"})) == "sequence-classification"
    assert heads.task_from_config(ns(id2label={0: "a"}, is_decoder=True)) == "causal-lm"
    assert heads.task_from_config(ns()) == "causal-lm"
    assert heads.head_of_class_name("MyModel") is None


def test_every_head_kind_has_a_target_resolver():
    assert set(targets.TARGET_RESOLVERS) == set(heads.HEAD_KINDS)


def test_resolve_targets_checks_then_dispatches_on_the_head_kind(monkeypatch):
    model, tok = testing.tiny("bert", "sequence-classification")
    enc, _ = encode(tok, ["a b", "c d"])
    seen = []

    def fake(model_, tok_, enc_, targets_):
        seen.append(targets_)
        return ["rows"]

    monkeypatch.setitem(targets.TARGET_RESOLVERS, "class", fake)
    assert targets.resolve_targets(model, tok, enc, 1) == ["rows"]
    assert seen == [[1, 1]]  # a single target is repeated per text before dispatch
    with pytest.raises(ValueError, match="target list has 3 entries but 2 texts were given"):
        targets.resolve_targets(model, tok, enc, [0, 1, 0])
    assert len(seen) == 1  # the shared length check runs before the resolver
