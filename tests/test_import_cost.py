"""``import seesaw`` and the CLI start without the heavy libraries (issue 23 item 5): pandas, numpy,
matplotlib, torch, simpy and scipy load only in the commands that use them."""

import json
import subprocess
import sys

HEAVY = ("pandas", "numpy", "matplotlib", "torch", "simpy", "scipy")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return [m for m in json.loads(out.stdout.splitlines()[-1]) if m in HEAVY]


def test_import_seesaw_loads_no_heavy_library():
    assert _loaded_after("import seesaw") == []


def test_cli_help_loads_no_heavy_library():
    code = ("import sys\nfrom seesaw.cli import main\nsys.argv = ['seesaw', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass")
    assert _loaded_after(code) == []
