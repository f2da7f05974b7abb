"""TensorBoard events: scalars equal metrics.jsonl, hyperparameters recorded, resume purges."""

import glob
import os
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from hinge_jax import experiment, io_utils
from hinge_jax.summary import SCALARS, flat_hparams
from helpers import default_config


def read_events(logdir):
  """Every Event in a directory's event files (the TFRecord framing read by hand)."""
  events = []
  for path in sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))):
    data = open(path, 'rb').read()
    i = 0
    while i < len(data):
      (n,) = struct.unpack('<Q', data[i:i + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[i + 12:i + 12 + n])
      events.append(event)
      i += 12 + n + 4
  return events


def scalars(events):
  out = {}
  for e in events:
    for v in e.summary.value:
      if not v.tag.startswith('_hparams_'):
        out.setdefault(v.tag, []).append((e.step, v.simple_value))
  return out


def test_flat_hparams_names_fields_by_dotted_path():
  flat = flat_hparams(default_config())
  assert flat['optimizer.learning_rate'] == 0.05 and flat['loss.name'] == 'multiclass_svm'
  assert flat['seed'] == 0 and 'optimizer' not in flat


def test_events_hold_the_metrics_and_hparams(tmp_path):
  config = default_config(**{'num_steps': 30, 'eval_every_steps': 10,
                             'checkpoint_every_steps': 10, 'sanity.enabled': False})
  results = experiment.train_and_evaluate(config, str(tmp_path), log=lambda line: None)
  events = read_events(tmp_path / 'tensorboard')
  tags = {v.tag for e in events for v in e.summary.value}
  assert {'_hparams_/experiment', '_hparams_/session_start_info',
          '_hparams_/session_end_info'} <= tags
  got = scalars(events)
  rows = io_utils.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  for key, tag in SCALARS.items():
    assert [s for s, _ in got[tag]] == [10, 20, 30]
    np.testing.assert_allclose([v for _, v in got[tag]], [r[key] for r in rows], rtol=1e-6)
  assert got['final/test_accuracy'] == [(30, pytest.approx(results['test_accuracy']))]


def test_a_resumed_run_purges_the_events_after_its_checkpoint(tmp_path, monkeypatch):
  config = default_config(**{'num_steps': 40, 'eval_every_steps': 10,
                             'checkpoint_every_steps': 20, 'sanity.enabled': False})
  io = io_utils
  real = io.append_jsonl

  def fail_at_30(path, row):
    real(path, row)
    if row['step'] == 30:
      raise OSError(28, 'No space left on device', path)
  monkeypatch.setattr(io, 'append_jsonl', fail_at_30)
  with pytest.raises(Exception, match='No space left'):
    experiment.train_and_evaluate(config, str(tmp_path), log=lambda line: None)
  monkeypatch.setattr(io, 'append_jsonl', real)
  experiment.train_and_evaluate(config, str(tmp_path), log=lambda line: None)
  events = read_events(tmp_path / 'tensorboard')
  starts = [e.step for e in events if e.HasField('session_log') and e.session_log.status == 1]
  assert starts[-1] == 20  # TensorBoard drops the first session's events from step 20 on
  after_purge = scalars(events[max(i for i, e in enumerate(events) if e.HasField('session_log')):])
  assert [s for s, _ in after_purge['train/loss']] == [30, 40]
