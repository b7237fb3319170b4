"""The code follows one style: flake8 with setup.cfg's settings (lines up to 100 characters)."""
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_flake8_finds_nothing():
    result = subprocess.run([sys.executable, '-m', 'flake8', 'repre_mm', 'tools', 'tests',
                             'configs', 'setup.py'], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
