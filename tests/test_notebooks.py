"""Run every research notebook (``notebooks/*.ipynb``) at its small CI size.

Each notebook executes top to bottom in a fresh kernel with ``notebooks/`` as its working
directory, as ``pytest --nbmake notebooks/`` would run it; figures go to a temporary folder
(``SEESAW_FIG_DIR``) so a test run leaves the committed PNGs alone. ``SEESAW_FULL`` is cleared:
the paper-sized runs are for regenerating figures by hand (see ``notebooks/README.md``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEESAW_FIG_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("SEESAW_FULL", raising=False)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    assert list(tmp_path.glob("*.png")), f"{path.name} saved no figure"


def test_notebooks_are_committed_without_outputs() -> None:
    for path in PATHS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, (
                    f"{path.name}: clear outputs before committing")
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
