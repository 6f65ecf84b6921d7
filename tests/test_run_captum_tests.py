"""scripts/run_captum_tests.py rewrites captum's class imports to hfattr's (on a fake source tree:
captum's real tests are not part of this repository and nothing is downloaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "run_captum_tests.py"


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("run_captum_tests", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_tree(root: Path) -> None:
    (root / "captum").mkdir(parents=True)
    (root / "captum" / "__init__.py").write_text('__version__ = "0.8.0"\n')
    helpers = root / "captum" / "testing" / "helpers"
    helpers.mkdir(parents=True)
    for name in ("__init__.py", "basic.py", "basic_models.py"):
        (helpers / name).write_text("from captum.testing.helpers.basic import BaseTest\n")
    heads = {
        "tests/attr/test_feature_ablation.py": "from captum.attr._core.feature_ablation import FeatureAblation\n",
        "tests/attr/layer/test_layer_ablation.py": (
            "from captum.attr._core.layer.layer_feature_ablation import LayerFeatureAblation\n"
        ),
        "tests/attr/neuron/test_neuron_gradient.py": (
            "from captum.attr._core.neuron.neuron_gradient import NeuronGradient\n"
        ),
        "tests/attr/test_lrp.py": "from captum.attr import InputXGradient, LRP\n"
        "from captum.attr._utils.lrp_rules import (\n    EpsilonRule,\n)\n",
    }
    for rel, head in heads.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(head + "from captum.testing.helpers import BaseTest\n")


def test_prepare_rewrites_every_class_import(runner, tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _fake_tree(src)
    written = runner.prepare(src, out)
    texts = {p.name: p.read_text() for p in written}
    assert "from hfattr import FeatureAblation" in texts["test_feature_ablation.py"]
    assert "from hfattr import LayerFeatureAblation" in texts["test_layer_ablation.py"]
    assert "from hfattr import NeuronGradient" in texts["test_neuron_gradient.py"]
    lrp = texts["test_lrp.py"]
    assert "from hfattr.lrp import LRP" in lrp and "from hfattr.lrp import (" in lrp
    assert "from captum.attr import InputXGradient\n" in lrp
    for text in texts.values():
        assert "captum.testing.helpers" not in text and "captum_test_helpers" in text
    assert "captum.testing" not in (out / "captum_test_helpers" / "__init__.py").read_text()


def test_prepare_refuses_a_tree_whose_imports_differ(runner, tmp_path):
    src = tmp_path / "src"
    _fake_tree(src)
    (src / "tests/attr/test_lrp.py").write_text("from captum.attr import LRP\n")
    with pytest.raises(SystemExit, match="expected one match"):
        runner.prepare(src, tmp_path / "out")
