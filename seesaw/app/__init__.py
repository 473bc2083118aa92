"""Use cases: what each command does (run, autotune, calibrate, whatif, profile), behind the CLI.

A use case takes plain arguments and specs, drives the simulator, the planner, the engine or the
profiler, and returns typed results; it prints nothing and knows nothing of Typer or Rich.
Folders, reports and tables are ``seesaw.report``'s (app -> report, never back).
"""
