"""Reports: run folders, plan / what-if / calibration reports, plots and tables.

``folders.write_run_folder`` is the one writer of a command's folder (``config.yaml`` when given,
``summary.json``, then the command's files); ``folders`` also holds the ``seesaw simulate`` and
``seesaw plan`` folders, ``whatif`` the what-if report, ``calibration`` the calibration folder
and text, ``plots`` the figures. Results come in duck-typed: this layer imports neither the use
cases (``seesaw.app``) nor the CLI, and prints nothing.
"""

from seesaw.report.folders import json_text, write_plan_folder, write_run_folder, write_sim_folder

__all__ = ["write_run_folder", "json_text", "write_sim_folder", "write_plan_folder"]
