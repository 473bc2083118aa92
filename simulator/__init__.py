"""The simulator layer: the cost model (``cost/``), the simpy simulation of a node (``sim``) and the
planner (``planner/``). It never imports torch or the engine: ``seesaw.core`` specs and the pure
scheduling policies in, typed results out.
"""
