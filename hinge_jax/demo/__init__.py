"""The lecture's interactive demo: a 3-class linear classifier on 2-D points, trained live in
the browser by hinge_jax's own losses, regularizer and `jax.grad` step.

`python -m hinge_jax.demo [--port=8000] [--host=127.0.0.1]`; see docs/demo.md.
"""
