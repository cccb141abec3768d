"""The Dockerfile, checked without a Docker engine (CI has none): its structure holds what the
operations issue asks (multi-stage, non-root, health check on /healthz), and its build stage's
recipe, replayed on this machine, yields a working keeper without the dev tools."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
UV = ROOT / ".tools" / "bin" / "uv"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [argument for word, argument in self.instructions if word == keyword]


def stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name, each with its instructions (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, argument = line.partition(" ")
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+) AS (\S+)", argument)
            assert match, f"every stage is named: {line}"
            current = Stage(match.group(2), match.group(1))
            found[current.name] = current
        else:
            assert current is not None
            current.instructions.append((keyword, argument))
    return found


def lineage(all_stages: dict[str, Stage], name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, nearest first."""
    chain = [all_stages[name]]
    while chain[-1].base in all_stages:
        chain.append(all_stages[chain[-1].base])
    return chain


def effective_user(chain: list[Stage]) -> str:
    """The USER the image runs as: the last one set by the nearest stage that sets one."""
    users = [stage.all("USER") for stage in chain if stage.all("USER")]
    assert users, "the image sets a USER"
    return users[0][-1]


def keeper_uid() -> int:
    user = re.search(r"useradd .*--uid (\d+)", DOCKERFILE.read_text())
    assert user, "the Dockerfile creates no user with a fixed uid"
    return int(user.group(1))


def test_the_default_image_is_the_keeper_non_root_with_a_health_check_on_healthz() -> None:
    all_stages = stages()
    assert list(all_stages)[-1] == "keeper", "the last stage is what `docker build .` produces"
    keeper = lineage(all_stages, "keeper")
    assert effective_user(keeper) not in ("root", "0")
    assert effective_user(keeper) in ("keeper", str(keeper_uid()))
    (healthcheck,) = [h for stage in keeper for h in stage.all("HEALTHCHECK")]
    assert "/healthz" in healthcheck
    env = " ".join(e for stage in keeper for e in stage.all("ENV"))
    port = re.search(r"ASGARD_KEEPER_OPS_METRICS_PORT=(\d+)", env)
    assert port is not None, "the health check needs a known port"
    assert "ASGARD_KEEPER_OPS_METRICS_HOST=0.0.0.0" in env
    assert port.group(1) in " ".join(e for stage in keeper for e in stage.all("EXPOSE"))
    assert "ASGARD_KEEPER_OPS_METRICS_PORT" in healthcheck


def test_the_keeper_keeps_its_database_on_a_volume_its_user_owns() -> None:
    """The database outlives the container: its directory is a VOLUME, created (before the
    VOLUME line, which freezes it) owned by the keeper's uid, so that a new named volume mounted
    there, which copies the directory's owner, is writable by the keeper."""
    keeper_stage = stages()["keeper"]
    env = " ".join(keeper_stage.all("ENV"))
    database = re.search(r"ASGARD_KEEPER_STORAGE_DATABASE_PATH=(\S+)", env)
    assert database is not None, "the keeper image sets no database path"
    path = PurePosixPath(database.group(1))
    assert path == PurePosixPath("/var/lib/asgard-keeper/keeper.sqlite")
    directory = str(path.parent)
    volumes = [
        volume
        for argument in keeper_stage.all("VOLUME")
        for volume in (json.loads(argument) if argument.startswith("[") else argument.split())
    ]
    assert volumes == [directory], volumes
    words = [word for word, _ in keeper_stage.instructions]
    creates = [
        index
        for index, (word, argument) in enumerate(keeper_stage.instructions)
        if word == "RUN" and directory in argument
    ]
    assert len(creates) == 1, "one RUN creates the database directory"
    (create,) = creates
    owner = re.search(
        r"(?:--owner[= ]|-o\s+|chown\s+(?:-\S+\s+)*)(\w+)", keeper_stage.instructions[create][1]
    )
    assert owner is not None, "the database directory is given to the keeper's user"
    assert owner.group(1) in ("keeper", str(keeper_uid()))
    assert create < words.index("VOLUME"), "changes after VOLUME are discarded by the build"
    # The directory is created as root, then the image drops back to the keeper's user.
    users_after = [a for w, a in keeper_stage.instructions[create:] if w == "USER"]
    assert users_after
    assert users_after[-1] not in ("root", "0")


def test_build_tools_stay_in_the_build_stages() -> None:
    all_stages = stages()
    runtime = lineage(all_stages, "keeper")
    copies = [c for stage in runtime for c in stage.all("COPY")]
    assert all("--from=build /app/.venv" in c or "--from=anvil" in c for c in copies), copies
    assert not [r for stage in runtime for r in stage.all("RUN") if "uv" in r or "npm" in r]
    devnet = lineage(all_stages, "devnet")
    assert any("ASGARD_ANVIL=" in e for stage in devnet for e in stage.all("ENV"))


def test_dockerignore_keeps_local_environments_out_of_the_context() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".tools", "node_modules", ".git", ".devnet"} <= ignored


def test_the_build_stage_recipe_yields_a_working_keeper_without_dev_tools(tmp_path: Path) -> None:
    """Replays the build stage's COPY and `uv sync` steps in a temp dir, then runs the installed
    `keeper` from elsewhere, so it cannot import the source tree."""
    build = stages()["build"]
    context = tmp_path / "app"
    context.mkdir()
    for source in build.all("COPY"):
        *names, _destination = shlex.split(source)
        for name in names:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, context / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(path, context / name)
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    syncs = [shlex.split(r) for r in build.all("RUN") if r.startswith("uv sync")]
    assert syncs, "the build stage installs with uv sync"
    for command in syncs:
        subprocess.run(
            [str(UV), *command[1:], "--quiet"], cwd=context, env=env, check=True, timeout=300
        )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    keeper = venv / "bin" / "keeper"
    helped = subprocess.run(
        [str(keeper), "--help"], cwd=elsewhere, capture_output=True, text=True, check=False
    )
    assert helped.returncode == 0, helped.stderr
    assert "run" in helped.stdout
    refused = subprocess.run(
        [str(keeper), "run", "--config", "missing.toml"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    artifacts = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from keeper.protocol.artifacts import load_artifact;"
         "print(len(load_artifact('CreditManager').abi))"],
        cwd=elsewhere, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert artifacts.returncode == 0, artifacts.stderr
    assert int(artifacts.stdout) > 10
    installed = {
        p.name.split("-")[0].lower()
        for p in (venv / "lib").glob("python*/site-packages/*.dist-info")
    }
    assert "web3" in installed
    assert not installed & {"pytest", "mypy", "ruff", "hypothesis"}
