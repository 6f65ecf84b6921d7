"""The ``hfattr`` command line, in-process through ``main([...])`` and once as ``python -m hfattr``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hfattr
from hfattr import Result, cli
from hfattr.cli import main, parse_options, parse_target
from hfattr.explainer import get_method, list_methods
from hfattr.pipeline import pipeline
from hfattr.testing import save_tiny

ROOT = Path(__file__).resolve().parents[1]
TEXT = "the movie was great"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return save_tiny("bert", tmp_path_factory.mktemp("cli") / "bert")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- parsing helpers
def test_parse_target():
    assert parse_target(None) is None
    assert parse_target("1") == 1 and isinstance(parse_target("1"), int)
    assert parse_target("-2") == -2
    assert parse_target("POSITIVE") == "POSITIVE"
    assert parse_target(" the end") == " the end"
    assert parse_target("1.5") == "1.5"


def test_parse_options():
    got = parse_options(
        ['sites="mlp"', "perturbations_per_eval=4", "granularity=word", "x=[1, 2]", "flag=true", "empty=", "eq=a=b"]
    )
    assert got == {
        "sites": "mlp",
        "perturbations_per_eval": 4,
        "granularity": "word",
        "x": [1, 2],
        "flag": True,
        "empty": "",
        "eq": "a=b",
    }
    for bad in ("novalue", "=3", "not an id=1"):
        with pytest.raises(cli.CLIError, match="key=value"):
            parse_options([bad])


# --------------------------------------------------------------------------- explain
def test_explain_table_and_header(capsys, model_dir):
    code, out, err = run(capsys, "explain", TEXT, "--model", model_dir, "--no-color")
    assert code == 0, err
    expected = pipeline(model=model_dir)(TEXT)
    lines = out.splitlines()
    assert lines[0] == f"model:       {model_dir}"
    assert lines[1] == "method:      ablation"
    assert lines[2] == f"target:      {expected.target['label']} (id {expected.target['id']})"
    assert lines[3] == f"probability: {expected.probability:.4f}"
    assert "\x1b[" not in out
    table = [ln.split() for ln in lines if ln[:3].strip().isdigit()]
    assert [row[1] for row in table] == expected.tokens
    for row, score in zip(table, expected.scores.tolist()):
        assert float(row[2]) == pytest.approx(score, abs=1e-4)
    code, out, _ = run(capsys, "explain", TEXT, "--model", model_dir, "--color")
    assert code == 0 and "\x1b[" in out


def test_explain_json_round_trip_and_target(capsys, model_dir, tmp_path):
    path = tmp_path / "r.json"
    code, _, err = run(
        capsys,
        "explain",
        TEXT,
        "--model",
        model_dir,
        "--target",
        "1",
        "--json",
        str(path),
        "--task",
        "text-classification",
    )
    assert code == 0, err
    loaded = Result.load(path)
    expected = pipeline(model=model_dir)(TEXT, target=1)
    assert loaded.target == expected.target and loaded.target["id"] == 1
    assert loaded.tokens == expected.tokens
    torch.testing.assert_close(loaded.scores, expected.scores, atol=0, rtol=0)
    assert loaded.model_name == model_dir and loaded.method == "ablation"
    # the file is plain JSON that round trips exactly
    assert Result.from_dict(json.loads(path.read_text())).to_dict() == loaded.to_dict()
    code, _, _ = run(capsys, "explain", TEXT, "--model", model_dir, "--target", "POSITIVE", "--json", str(path))
    assert code == 0 and Result.load(path).target["label"] == "POSITIVE"


def test_explain_options_reach_the_method(capsys, model_dir, tmp_path):
    path = tmp_path / "grid.json"
    code, out, err = run(
        capsys,
        "explain",
        "the movie",
        "--model",
        model_dir,
        "--method",
        "layer_ablation",
        "--option",
        'sites="mlp"',
        "-o",
        "perturbations_per_eval=4",
        "--json",
        str(path),
        "--no-color",
    )
    assert code == 0, err
    res = Result.load(path)
    assert res.rows == ["blocks.0.mlp", "blocks.1.mlp"]
    assert res.options["perturbations_per_eval"] == 4
    assert "blocks.0.mlp" in out and "method:      layer_ablation" in out

    code, out, err = run(
        capsys,
        "explain",
        TEXT,
        "--model",
        model_dir,
        "--method",
        "neuron_gradient",
        "-o",
        'site="blocks.0.mlp"',
        "-o",
        "neuron=3",
        "--json",
        str(path),
        "--no-color",
    )
    assert code == 0, err
    res = Result.load(path)
    assert res.target["kind"] == "neuron" and res.target["neuron"] == 3
    assert "probability: n/a" in out and res.scores.abs().sum() > 0


def test_explain_html_is_escaped(capsys, model_dir, tmp_path):
    path = tmp_path / "r.html"
    code, _, err = run(capsys, "explain", "the <movie> & great", "--model", model_dir, "--html", str(path))
    assert code == 0, err
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<movie>" not in page
    assert "the &lt;movie&gt; &amp; great" in page
    assert '<span class="hfattr-tok"' in page
    assert f"wrote {path}" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "nope"], "unknown method 'nope'"),
        (["--target", "7"], "target 7 is out of range"),
        (["--target", "NOPE"], "unknown label name 'NOPE'"),
        (["-o", "bogus=1"], "unknown option(s) ['bogus']"),
        (["-o", "novalue"], "--option expects key=value"),
        (["-o", "target=1"], "use --target"),
        (["--task", "nope"], "unknown task 'nope'"),
    ],
)
def test_explain_errors_exit_2_with_one_line(capsys, model_dir, argv, message):
    code, out, err = run(capsys, "explain", TEXT, "--model", model_dir, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("hfattr: error: ")
    assert message in err
    assert "Traceback" not in err


def test_missing_model_path(capsys, tmp_path):
    code, _, err = run(capsys, "explain", TEXT, "--model", str(tmp_path / "nothing"))
    assert code == 2 and "is not an existing directory" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- other commands
def test_methods_lists_every_method(capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0
    lines = out.splitlines()
    assert [ln.split()[0] for ln in lines] == list_methods()
    for ln in lines:
        assert get_method(ln.split()[0]).description in ln


def test_version_and_usage(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"hfattr {hfattr.__version__}"
    code, _, err = run(capsys)
    assert code == 2 and "explain" in err and "methods" in err
    code, _, err = run(capsys, "frobnicate")
    assert code == 2 and "invalid choice" in err


def test_register_command(capsys):
    seen = {}

    def configure(p):
        p.add_argument("--n", type=int, default=1)

    def run_it(args):
        seen["n"] = args.n
        print("ran")
        return 0

    handle = cli.register_command("dummy-cmd", help="a test command", configure=configure, run=run_it)
    try:
        with pytest.raises(ValueError, match="already registered"):
            cli.register_command("dummy-cmd", help="x", configure=configure, run=run_it)
        code, out, _ = run(capsys, "dummy-cmd", "--n", "5")
        assert code == 0 and out == "ran\n" and seen == {"n": 5}
    finally:
        handle.remove()
    assert main(["dummy-cmd"]) == 2  # removed: argparse no longer knows it
    with pytest.raises(ValueError, match="command name"):
        cli.register_command("Bad Name", help="x", configure=configure, run=run_it)


# --------------------------------------------------------------------------- as a process, default model
def _env() -> dict:
    env = dict(os.environ, NO_COLOR="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FORCE_COLOR", None)
    return env


def test_explain_on_the_default_model(tmp_path, capsys):
    """`hfattr explain TEXT` with no --model: the bundled default model, end to end (in-process)."""
    from hfattr.cli import main
    from hfattr.hf.default_model import DEFAULT_MODEL_NAME

    path = tmp_path / "out.json"
    assert main(["explain", TEXT, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    res = Result.load(path)
    assert res.model_name == DEFAULT_MODEL_NAME and f"model:       {DEFAULT_MODEL_NAME}" in out
    assert res.target["label"] == "POSITIVE"
    for tok in res.tokens:
        assert tok in out
    assert [t for t, s in zip(res.tokens, res.special_mask) if not s] == TEXT.split()
    assert res.top_k(1, by="value")[0][0] == "great"
    assert "\x1b[" not in out  # not a terminal


def test_python_m_hfattr(tmp_path):
    """The one `python -m hfattr` process (the commands themselves are tested in-process)."""
    from hfattr.methods import list_methods

    proc = subprocess.run(
        [sys.executable, "-m", "hfattr", "methods"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in list_methods():
        assert name in proc.stdout


def test_console_script():
    # pip puts the script next to the interpreter (a PATH shim may not exist yet, e.g. pyenv)
    exe = shutil.which("hfattr", path=os.path.dirname(sys.executable)) or shutil.which("hfattr")
    if exe is None:
        pytest.skip("the hfattr console script is not installed (pip install -e . --no-deps)")
    proc = subprocess.run([exe, "--version"], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"hfattr {hfattr.__version__}"
