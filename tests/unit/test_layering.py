"""Data flows one way: chain/protocol -> state -> risk -> execution. A stage never imports a later
stage or an edge (config, start-up, daemon, CLI, operator commands, devnet), and only the command
line (`keeper run`, and the operator commands' logging) wires in `ops`, which observes every stage
and on which none depends."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "keeper"
STAGES = ("chain", "protocol", "state", "risk", "execution")
EDGES = {"config", "startup", "daemon", "cli", "operator", "devnet", "ops"}


def keeper_imports(path: Path) -> set[str]:
    """The second component of every `keeper.X...` module `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found |= {name.split(".")[1] for name in names if name.startswith("keeper.")}
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_earlier_stages(stage: str) -> None:
    later = set(STAGES[STAGES.index(stage) + 1 :])
    for path in sorted((PACKAGE / stage).rglob("*.py")):
        wrong = keeper_imports(path) & (later | EDGES)
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"


def test_only_the_command_line_wires_in_ops() -> None:
    importers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "ops" in keeper_imports(path) and path.parent.name != "ops"
    }
    assert importers <= {"cli.py", "operator/session.py"}, importers
