"""README.md's "Use it from Python" script runs as printed, so it cannot rot."""

import ast
import re
import subprocess
import sys

from helpers import ROOT, cli_env


def readme_script() -> str:
    """The first ```python block of README.md's "Use it from Python" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_script_runs_as_printed(tmp_path):
    script = readme_script()
    # About 20 lines of code beyond the imports, as the README promises.
    code = [line for line in script.splitlines() if line.strip()]
    body = [line for line in code if not line.startswith(("import ", "from "))]
    assert len(body) <= 25, len(body)
    (tmp_path / "script.py").write_text(script)
    env = cli_env(PYTHONPATH=str(ROOT))  # the checkout only, as a user's shell would have it
    run = dict(cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    result = subprocess.run([sys.executable, "script.py"], **run)
    assert result.returncode == 0, result.stderr[-3000:]
    report = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert report["auc"] > 0.95 and 0.0 <= report["eer"] < 0.1, report
    assert report["threshold"] > 0  # Calibrated by the callback, not the -1 placeholder.
    # No warning of ours: SiameseModel.fit does not pass Keras' ignored shuffle=True.
    assert "shuffle" not in result.stderr and "Warning" not in result.stderr, result.stderr
