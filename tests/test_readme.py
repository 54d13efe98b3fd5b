"""The README's commands stay true: CI runs exactly the test command it shows."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_command(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```(?:sh|bash)\n(.+?)\n```", text, re.S)
    assert match, f"README.md has no {marker} block"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command():
    command = _readme_command("test-command").splitlines()[-1]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines


def test_main_job_command_trains_on_the_bundled_data():
    command = _readme_command("train-command").splitlines()[-1]
    assert "pip install" in command and "[train]" in command
    assert command.rstrip().endswith("fastcnn train")
