"""Softmax on HOG + hue-histogram features of CIFAR-10: the SVM features run's twin.

Command (CIFAR-10 prepared as described in the README's dataset section, issue #3):
  python -m hinge_jax.main --config=configs/cifar10_features_softmax.py \
      --workdir=/tmp/hinge_jax/cifar10_features_softmax --config.dataset.data_dir=DIR

Everything as `cifar10_features_svm.py` (features, protocol, SGD, batch 200, 1,500 steps, the
same 3 × 3 grid in `config.sweep`) but the softmax cross-entropy loss. The notebook trains
only the SVM on these features; with this much regularization both losses settle near a
class-template classifier, so expect about the SVM's accuracy (val ≈ 0.41–0.44, test ≥ 0.40;
not yet run on the real CIFAR-10). `configs/cifar10_features_softmax.py:single` trains only
the single point lr 1e-7, reg 5e4.
"""

import ml_collections

from configs import cifar10_features_svm


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = cifar10_features_svm.get_config(arg)
  c.loss.name = 'softmax_cross_entropy'
  return c
