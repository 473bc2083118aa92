"""The application layer: the product's use cases (run a batch, auto-tune, calibrate, what-if,
profile), each a function taking typed options and returning a typed result.

Nothing here prints or parses command lines: the CLI (``seesaw.cli``) and the Python API
(``seesaw``) call these functions and present their results. Progress goes to the callbacks a
caller passes in.
"""
