"""The notebooks run top to bottom on the CPU, and are kept in git without outputs."""
import json
import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# a bound for a notebook that hangs, not a timing (minutes: a loaded machine is slow, not stuck);
# the seconds each takes on idle cores are measured and kept in the README's table
BUDGET_SECONDS = 600
FAST = {"01_quickstart.ipynb"}  # the rest load several models or run a study: minutes together


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, \
                f"{path.name}: clear its outputs before committing (jupyter nbconvert --clear-output --inplace)"


def _execute(path: Path, tmp_path: Path) -> float:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - started
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    return seconds


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name, marks=() if p.name in FAST else pytest.mark.slow)
                                  for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_within_budget(path, tmp_path):
    seconds = _execute(path, tmp_path)
    print(f"{path.name}: {seconds:.1f}s")
    assert seconds < BUDGET_SECONDS, f"{path.name} took {seconds:.0f}s"
