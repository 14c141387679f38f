"""The README's Quickstart: what a user types, what CI runs of it, and the checks CI applies to its outputs.

CI (.ci/run) runs the first two Quickstart commands verbatim in a copy of the checkout alone in an
empty folder and then `tests/quickstart.py check`; these tests check the pieces on known inputs.
"""

from __future__ import annotations

import json
import re

import pandas as pd

from tests.conftest import REPO
from tests.quickstart import _base64, caption_problems, quickstart_commands, report_problems, smoke_study, table_problems

COMMANDS = quickstart_commands((REPO / "README.md").read_text())


def test_the_first_command_installs_and_runs_the_smoke_study_with_nothing_from_outside_the_clone():
    first = COMMANDS[0]
    assert first.startswith("python3 -m venv .venv && .venv/bin/pip install -e . && ")
    assert first.endswith(" && .venv/bin/snakemake --cores 2 --configfile config/smoke.yaml")
    assert not re.search(r"\b[A-Z_]+=", first), "no environment variable: a user has none of ours"
    assert ".." not in first and "[" not in first, "nothing beside the clone, no extras"


def test_the_second_command_builds_the_report_of_that_run():
    assert COMMANDS[1] == ".venv/bin/snakemake --report report.html --configfile config/smoke.yaml"


def test_ci_runs_the_quickstart_commands_it_reads_from_the_readme():
    ci = (REPO / ".ci" / "run").read_text()
    assert "tests/quickstart.py command 0" in ci and "tests/quickstart.py command 1" in ci
    assert "tests/quickstart.py check" in ci


def test_quickstart_commands_are_the_bash_lines_of_its_section():
    readme = ("# x\n```bash\nnot this\n```\n## Quickstart\ntext\n```bash\n# 1. comment\na && b\n\n  c\n```\n"
              "```bash\nd\n```\n## Next\n")
    assert quickstart_commands(readme) == ["a && b", "  c"]


def test_the_smoke_study_makes_the_stand_in_colour_figures_without_a_mirror():
    study = smoke_study(REPO)
    assert {run.dataset for run in study.runs if run.architecture == "convvae64"} == {"celeba_standin"}
    names = {target.rsplit("/", 1)[1] for target in study.all_targets()}
    colour = {f"{name}_celeba_standin.png" for name in ("exemplar_samples", "unconditional_samples", "cyclic_generation")}
    assert colour | {"celeba.csv"} <= names


def test_report_problems_name_what_is_missing_or_not_embedded(tmp_path):
    (tmp_path / "t").mkdir()
    for name, data in (("t/a.csv", b"x,y\n1,2\n"), ("t/b.png", b"\x89PNG fake"), ("t/c.md", b"# md")):
        (tmp_path / name).write_bytes(data)
    html = f'var results = {{"t/a.csv": {{"data_uri": "data:text/csv;base64,{_base64(tmp_path / "t/a.csv")}"}}}}'
    targets = ["t/a.csv", "t/b.png", "t/c.md", "t/d.png"]
    assert report_problems(html, tmp_path, targets) == [
        "t/b.png: not embedded in report.html", "t/d.png: not made"
    ]


def test_caption_problems_want_the_registry_s_stand_in_note_on_stand_in_figures_only():
    study = smoke_study(REPO)
    note = "STAND-IN data: celeba_standin is synthetic faces, not CelebA."
    captions = {t: f"<p>Samples.\n{note}</p>" for t in study.dataset_figure_targets("celeba_standin")}
    captions |= {t: "<p>Samples.</p>" for t in study.dataset_figure_targets("mnist_subset")}
    html = f"<script>var results = {json.dumps({t: {'caption': c} for t, c in captions.items()})};</script>"
    assert caption_problems(html, study) == []
    wrong = study.dataset_figure_targets("celeba_standin")[0]
    captions[wrong] = "<p>Samples. STAND-IN data: celeba_standin is synthetic cartoon faces.</p>"
    captions["results/smoke/figures/tsne_mnist_subset.png"] = f"<p>{note}</p>"
    html = f"var results = {json.dumps({t: {'caption': c} for t, c in captions.items()})};"
    assert caption_problems(html, study) == [
        "results/smoke/figures/tsne_mnist_subset.png: its caption in report.html calls mnist_subset a stand-in",
        f"{wrong}: its caption in report.html does not say '{note}'",
    ]


def test_table_problems_want_smoke_labels_and_known_data(tmp_path):
    row = {"status": "off", "profile": "smoke", "data_used": "mnist_subset"}
    pd.DataFrame([row, {**row, "status": "not run", "profile": "", "data_used": ""}]).to_csv(tmp_path / "good.csv")
    pd.DataFrame([{**row, "data_used": "celeba_sample"}]).to_csv(tmp_path / "other.csv")
    claim = {"verdict": "mixed", "profile": "smoke", "data_used": "mnist_subset"}
    pd.DataFrame([claim, {**claim, "verdict": "not testable"}]).to_csv(tmp_path / "claims.csv")
    pd.DataFrame([{**claim, "verdict": "not testable"}]).to_csv(tmp_path / "untested.csv")
    (tmp_path / "good.md").write_text("# nll table: reported vs reproduced (SMOKE)\n")
    (tmp_path / "bad.md").write_text("# nll table: reported vs reproduced (paper protocol)\n")
    targets = ["good.csv", "other.csv", "claims.csv", "untested.csv", "good.md", "bad.md"]
    assert table_problems(tmp_path, targets, {"mnist_subset", "celeba_standin"}) == [
        "other.csv: 1 reproduced rows, profiles ['smoke'], data used ['celeba_sample']",
        "untested.csv: 0 reproduced rows, profiles [], data used []",
        "bad.md: the title does not say SMOKE",
    ]
