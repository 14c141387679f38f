"""The README's Quickstart as CI runs it: its commands, verbatim, and what their outputs must hold.

    python3 tests/quickstart.py command N          # print the README's N-th Quickstart command (from 0)
    python tests/quickstart.py check WORKDIR       # check the smoke study's outputs, report.html, and that
                                                   # Snakemake finds nothing left to do in WORKDIR

`command` needs only the standard library (CI runs it before any venv exists); `check` needs the
project installed (the venv the Quickstart made).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REPORT = "report.html"


def quickstart_commands(readme: str) -> list[str]:
    """The command lines (not comments or blank lines) of the first ```bash block of the Quickstart section."""
    section = readme.split("\n## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    if block is None:
        raise ValueError("the README's Quickstart section has no ```bash block")
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def smoke_study(workdir: Path):
    """The smoke study of ``workdir`` (an `evae.study.Study`), its configs merged and validated as Snakemake does."""
    from snakemake.utils import validate

    from evae.study import Study, load_config

    config = load_config(workdir / "config" / "config.yaml", workdir / "config" / "smoke.yaml")
    validate(config, str(workdir / "workflow" / "schemas" / "config.schema.yaml"))
    return Study(config)


def report_problems(html: str, workdir: Path, targets: list[str]) -> list[str]:
    """Targets missing from disk, and report-worthy ones (CSV tables, PNG figures) the report does not
    embed byte for byte."""
    problems = []
    for target in targets:
        path = workdir / target
        if not path.is_file():
            problems.append(f"{target}: not made")
        elif path.suffix in (".csv", ".png") and (f'"{target}"' not in html or _base64(path) not in html):
            problems.append(f"{target}: not embedded in {REPORT}")
    return problems


def caption_problems(html: str, study) -> list[str]:
    """Figures whose caption in the report does not say what stand-in data are (the registry's ``stand_in``), or
    calls the paper's data a stand-in."""
    from evae.data.registry import get_spec

    start = html.index("var results = {") + len("var results = ")  # Snakemake's JSON: path -> name, caption, ...
    results = json.JSONDecoder().raw_decode(html, start)[0]
    problems = []
    for dataset in study.config["figures"]["datasets"]:
        what = get_spec(dataset).stand_in
        note = f"STAND-IN data: {dataset} is {what}."
        for target in study.dataset_figure_targets(dataset):
            caption = results.get(target, {}).get("caption", "")
            if what and note not in caption:
                problems.append(f"{target}: its caption in {REPORT} does not say '{note}'")
            elif not what and "STAND-IN" in caption:
                problems.append(f"{target}: its caption in {REPORT} calls {dataset} a stand-in")
    return problems


def _base64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def table_problems(workdir: Path, targets: list[str], datasets: set[str]) -> list[str]:
    """Tables without reproduced rows (the claims table: without a claim tested), with rows not labelled as
    smoke rows or made from data other than ``datasets`` (so a stand-in is always named), or whose Markdown
    title does not say SMOKE."""
    import pandas as pd

    problems = []
    for target in (t for t in targets if (workdir / t).is_file()):
        if target.endswith(".csv"):
            table = pd.read_csv(workdir / target)
            made = table.query("status != 'not run'" if "status" in table else "verdict != 'not testable'")
            labels = (sorted(set(made["profile"])), sorted(set(made["data_used"])))
            if made.empty or labels[0] != ["smoke"] or not set(labels[1]) <= datasets:
                problems.append(f"{target}: {len(made)} reproduced rows, profiles {labels[0]}, data used {labels[1]}")
        elif target.endswith(".md") and "SMOKE" not in (workdir / target).read_text().splitlines()[0]:
            problems.append(f"{target}: the title does not say SMOKE")
    return problems


def rerun_problems(workdir: Path) -> list[str]:
    """After the run, Snakemake (this interpreter's) must find the smoke study up to date: no job planned again."""
    snakemake = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run([str(snakemake), "-n", "--configfile", "config/smoke.yaml"], cwd=workdir,
                          capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    if proc.returncode == 0 and "Nothing to be done" in output:
        return []
    return [f"snakemake -n plans jobs again after the run:\n{output[-3000:]}"]


def check(workdir: Path) -> int:
    study = smoke_study(workdir)
    targets = study.all_targets()
    html = (workdir / REPORT).read_text()
    datasets = {run.dataset for run in study.runs}
    problems = report_problems(html, workdir, targets) + table_problems(workdir, targets, datasets)
    problems += caption_problems(html, study)
    problems += rerun_problems(workdir)
    for line in problems:
        print(f"FAILED {line}")
    tables, figures = (sum(t.endswith(ext) for t in targets) for ext in (".csv", ".png"))
    print(f"{REPORT}: {tables} tables and {figures} figures of the smoke study checked, {len(problems)} problem(s)")
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["command"] and len(argv) == 2:
        print(quickstart_commands((REPO / "README.md").read_text())[int(argv[1])])
        return 0
    if argv[:1] == ["check"] and len(argv) == 2:
        return check(Path(argv[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
