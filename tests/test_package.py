"""The package itself: import cost, entry points, public names."""

import subprocess
import sys


def test_import_does_not_load_torch_or_transformers():
    code = "import sys, agentcpm; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_prints_help():
    out = subprocess.run([sys.executable, "-m", "agentcpm", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "agentcpm" in out.stdout


def test_public_names():
    import agentcpm

    for name in agentcpm.__all__:
        assert getattr(agentcpm, name) is not None
