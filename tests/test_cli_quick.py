"""A quiet, quick command line: lazy imports, --verbose, `hfattr report`, refused random heads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hfattr.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ, NO_COLOR="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def test_help_and_methods_import_neither_torch_nor_transformers():
    code = (
        "import sys, contextlib, io\n"
        "from hfattr.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['methods']) == 0\n"
        "    assert main(['--help']) == 0\n"
        "    assert main(['report', '--help']) == 0\n"
        "    assert main(['evaluate', '--help']) == 0\n"
        "assert 'sig' in out.getvalue() and 'comprehensiveness' in out.getvalue()\n"
        "import hfattr\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'datasets', 'matplotlib') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_lazy_top_level_names_still_import():
    import hfattr
    import hfattr.planted as planted
    from hfattr import FeatureAblation, LRP, Explainer, Result, evaluate, pipeline  # noqa: F401

    assert planted is hfattr.planted is hfattr.evaluate.planted
    assert callable(hfattr.evaluate.faithfulness) and hfattr.Explainer is Explainer
    assert set(hfattr.__all__) <= set(dir(hfattr))
    with pytest.raises(AttributeError):
        hfattr.not_a_name  # noqa: B018


def test_method_registered_by_module_path():
    from hfattr.methods import get_method, register_method

    spec = register_method("ablation_by_path", "hfattr.methods.ablation:ablation", description="same")
    try:
        from hfattr.methods.ablation import ablation

        assert get_method("ablation_by_path").fn is ablation
    finally:
        spec.remove()
    with pytest.raises(ValueError, match="module:function"):
        register_method("bad", "not a path")
    bad = register_method("bad_signature", "os.path:join")  # checked when first used
    try:
        with pytest.raises(TypeError, match="only positional argument"):
            _ = get_method("bad_signature").fn
    finally:
        bad.remove()


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory) -> str:
    from hfattr.testing import save_tiny

    return save_tiny("bert", tmp_path_factory.mktemp("mlm") / "bert-mlm", "masked-lm")


def test_a_head_that_is_not_there_is_refused(mlm_dir, capsys):
    from hfattr.hf.loading import load_model

    with pytest.raises(ValueError, match=r"no trained weights for the head .*classifier\.(bias|weight)"):
        load_model(mlm_dir, task="text-classification")
    model, _ = load_model(mlm_dir, task="text-classification", allow_new_head=True)
    assert type(model).__name__.endswith("ForSequenceClassification")
    capsys.readouterr()
    assert main(["explain", "the movie", "--model", mlm_dir, "--task", "text-classification"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "would be initialised at random" in err and "'masked-lm'" in err
    model, _ = load_model(mlm_dir)  # its own head loads
    assert type(model).__name__.endswith("ForMaskedLM")


def test_load_reports_only_with_verbose(mlm_dir, capsys):
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    assert main(["explain", "the [MASK] was great", "--model", mlm_dir]) == 0
    quiet = capsys.readouterr().err
    assert "Loading weights" not in quiet and quiet == ""
    assert hf_logging.get_verbosity() == before
    assert main(["explain", "the [MASK] was great", "--model", mlm_dir, "--verbose"]) == 0
    assert "Loading weights" in capsys.readouterr().err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import datasets

    import hfattr
    from hfattr.hf.default_model import DEFAULT_MODEL_NAME, load_default_model

    model, tok = load_default_model()
    explainer = hfattr.Explainer(model, tok, model_name=DEFAULT_MODEL_NAME)
    data = datasets.Dataset.from_dict({"text": ["the movie was great", "a <b>boring</b> film", "awful service"]})
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for method in ("ablation", "layer_ablation"):
        out[method] = base / method
        hfattr.attribute_dataset(
            explainer,
            data,
            text_column="text",
            method=method,
            output_dir=out[method],
            progress=False,
            **({"sites": "attention"} if method == "layer_ablation" else {}),
        )
    return out


def test_report_command(runs, tmp_path, capsys):
    run = runs["ablation"]
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().err.strip() == f"wrote {run / 'report.html'}"
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "<b>boring</b>" not in page and "&lt;b&gt;boring&lt;/b&gt;" in page  # escaped
    assert "Tokens ranked by mean score" in page and "most toward the label" in page
    assert page.count('class="hfattr-report-row"') == 3 and "Faithfulness" not in page
    assert main(["report", str(run), "--output", str(tmp_path / "r.html"), "--min-count", "2"]) == 0
    assert "tokens seen at least 2 times" in (tmp_path / "r.html").read_text(encoding="utf-8")
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_grid_runs_write_no_empty_corpus_files(runs, capsys):
    from hfattr.dataset.corpus import token_attribution_records, write_corpus_summary

    run = runs["layer_ablation"]
    assert token_attribution_records(run) == 0
    assert write_corpus_summary(run) == (None, None)
    assert not (run / "corpus_summary.csv").exists() and not (run / "corpus_summary.png").exists()
    assert main(["corpus-summary", str(run)]) == 0
    assert "corpus:     none" in capsys.readouterr().out
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "No ranking" in page and page.count('class="hfattr-grid"') == 3
    assert token_attribution_records(runs["ablation"]) == 3


def test_elapsed_line_only_on_a_terminal_and_only_after_the_delay():
    import io
    import time

    from hfattr.cli.common import elapsed

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    with elapsed("explaining with sig", after=0.05, stream=out):
        time.sleep(0.4)
    text = out.getvalue()
    assert "\rexplaining with sig \u2026 0 s" in text and text.endswith("\r\x1b[K")  # the line is cleared
    quick = Tty()
    with elapsed("quick", after=5.0, stream=quick):
        pass
    assert quick.getvalue() == ""
    pipe = io.StringIO()  # not a terminal: nothing
    with elapsed("piped", after=0.0, stream=pipe):
        time.sleep(0.1)
    assert pipe.getvalue() == ""
