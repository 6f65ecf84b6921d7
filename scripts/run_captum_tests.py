"""Run captum's own tests for the drop-in classes against hfattr's classes.

Given a captum source tree (a git checkout of tag v0.8.0; the PyPI sdist has no tests), copy
captum's test files for FeatureAblation, LayerFeatureAblation, NeuronGradient and LRP and the
helpers they import into a temporary folder, rewrite the class imports to hfattr's, run pytest
there and print the pass / fail counts per file. Nothing of captum's test code is kept.

    git clone --branch v0.8.0 --depth 1 https://github.com/pytorch/captum /tmp/captum-src
    python scripts/run_captum_tests.py /tmp/captum-src [--keep] [-- extra pytest arguments]

Exit status: 0 when the run finished (failures are reported, not fatal: see
docs/compatibility.md for the ones that are deliberate), 2 when the tree is not usable.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PINNED = "0.8.0"

# captum test file -> the import rewrites it needs (each must match exactly once)
TESTS: dict[str, list[tuple[str, str]]] = {
    "tests/attr/test_feature_ablation.py": [
        (r"^from captum\.attr\._core\.feature_ablation import FeatureAblation$", "from hfattr import FeatureAblation"),
    ],
    "tests/attr/layer/test_layer_ablation.py": [
        (
            r"^from captum\.attr\._core\.layer\.layer_feature_ablation import LayerFeatureAblation$",
            "from hfattr import LayerFeatureAblation",
        ),
    ],
    "tests/attr/neuron/test_neuron_gradient.py": [
        (
            r"^from captum\.attr\._core\.neuron\.neuron_gradient import NeuronGradient$",
            "from hfattr import NeuronGradient",
        ),
    ],
    "tests/attr/test_lrp.py": [
        (
            r"^from captum\.attr import InputXGradient, LRP$",
            "from captum.attr import InputXGradient\nfrom hfattr.lrp import LRP",
        ),
        # the rules set as ``module.rule`` are hfattr's too (a drop-in user switches both imports)
        (r"^from captum\.attr\._utils\.lrp_rules import \(", "from hfattr.lrp import ("),
    ],
}
HELPERS = "captum/testing/helpers"
HELPER_FILES = ["__init__.py", "basic.py", "basic_models.py"]
LOCAL_HELPERS = "captum_test_helpers"


def _version(src: Path) -> str | None:
    init = src / "captum" / "__init__.py"
    if not init.is_file():
        return None
    found = re.search(r'__version__\s*=\s*["\']([^"\']+)["\']', init.read_text())
    return found.group(1) if found else None


def _rewrite(text: str, rules: list[tuple[str, str]], where: str) -> str:
    for pattern, replacement in rules:
        text, n = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if n != 1:
            raise SystemExit(f"{where}: expected one match of {pattern!r}, found {n}; is this captum {PINNED}?")
    return text


def _helpers_rule() -> list[tuple[str, str]]:
    return [(r"captum\.testing\.helpers", LOCAL_HELPERS)]


def prepare(src: Path, out: Path) -> list[Path]:
    """Copy and rewrite the test files and helpers into ``out``; return the test files."""
    helpers = out / LOCAL_HELPERS
    helpers.mkdir(parents=True)
    for name in HELPER_FILES:
        text = (src / HELPERS / name).read_text()
        text = re.sub(r"captum\.testing\.helpers", LOCAL_HELPERS, text)
        (helpers / name).write_text(text)
    written = []
    for rel, rules in TESTS.items():
        path = src / rel
        if not path.is_file():
            raise SystemExit(f"{path} is missing: give the root of a captum source checkout (tag v{PINNED})")
        text = _rewrite(path.read_text(), rules, rel)
        text = re.sub(r"captum\.testing\.helpers", LOCAL_HELPERS, text)
        if re.search(
            r"^from captum\.attr\._core\.(feature_ablation|layer\.layer_feature_ablation|"
            r"neuron\.neuron_gradient|lrp) import",
            text,
            flags=re.MULTILINE,
        ):
            raise SystemExit(f"{rel}: a captum class import was left unrewritten")
        target = out / Path(rel).name
        target.write_text(text)
        written.append(target)
    return written


def summarise(junit: Path) -> tuple[dict[str, dict[str, int]], list[tuple[str, str, str]]]:
    """Per-file counts and the (file, test, first message line) of every failure or error."""
    counts: dict[str, dict[str, int]] = {}
    failures: list[tuple[str, str, str]] = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        file = case.get("classname", "").split(".")[0]
        row = counts.setdefault(file, {"passed": 0, "failed": 0, "skipped": 0})
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            row["failed"] += 1
            message = (bad.get("message") or "").strip().splitlines()
            failures.append((file, case.get("name", "?"), message[0][:160] if message else ""))
        elif case.find("skipped") is not None:
            row["skipped"] += 1
        else:
            row["passed"] += 1
    return counts, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captum_src", type=Path, help="root of a captum source tree (tag v0.8.0)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print it")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    src = args.captum_src.resolve()
    version = _version(src)
    if version is None:
        print(f"{src} is not a captum source tree (no captum/__init__.py with __version__)", file=sys.stderr)
        return 2
    if version != PINNED:
        print(f"warning: captum source is {version}; hfattr follows {PINNED}", file=sys.stderr)
    try:
        import captum  # the tests import captum's helpers and other classes
    except ImportError:
        print("captum must be installed (pip install captum==0.8.0)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="hfattr-captum-tests-"))
    try:
        prepare(src, tmp)
        junit = tmp / "junit.xml"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(tmp), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp),
            f"--junitxml={junit}",
            *args.pytest_args,
            str(tmp),
        ]
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
        if not junit.is_file():
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
            return 2
        counts, failures = summarise(junit)
        print(f"captum {version} tests against hfattr (captum installed: {captum.__version__})")
        print(f"{'file':28s} {'passed':>7s} {'failed':>7s} {'skipped':>8s}")
        total = {"passed": 0, "failed": 0, "skipped": 0}
        for file, row in sorted(counts.items()):
            print(f"{file:28s} {row['passed']:7d} {row['failed']:7d} {row['skipped']:8d}")
            for k in total:
                total[k] += row[k]
        print(f"{'total':28s} {total['passed']:7d} {total['failed']:7d} {total['skipped']:8d}")
        for file, name, message in failures:
            print(f"FAILED {file}::{name}: {message}")
        if args.keep:
            print(f"kept: {tmp}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
