"""hinge_jax: linear classifiers (multiclass SVM, softmax) and the ways to optimize them, in JAX."""

__version__ = '0.1.0'
