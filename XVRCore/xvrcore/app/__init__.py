"""The applications on top of the library: the command line, the demo, the accuracy harness and job running.

``cli`` (the ``xvrcore`` command), ``commands`` (the ``register`` / ``train`` options, and their
command lines for background jobs), ``demo``, ``evaluate`` (the accuracy harness) and ``jobs`` (the
parent side of a background job). Nothing is imported here, so ``xvrcore.app.jobs`` stays light.
"""
