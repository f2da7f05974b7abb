"""Nothing lost: a torn or missing metrics row comes back from the checkpoint, and a full
disk at any writer stops the run with one line (the writers' close path never raises).

In-process, through `experiment.train_and_evaluate` on short digits runs.
"""

import errno
import os

import pytest
import tensorboardX

from hinge_jax import experiment
from hinge_jax.checkpoint import Checkpointer
from hinge_jax.errors import UserError
from helpers import default_config

# A checkpoint every 100 steps, an evaluation every 100: the checkpoint's row is the last line.
SMALL = {'num_steps': 300, 'eval_every_steps': 100, 'checkpoint_every_steps': 100,
         'sanity.enabled': False}


def _config():
  return default_config(**SMALL)


def _quiet(line):
  del line


class _Stop(Exception):
  """Stands for a process stopped right after a checkpoint."""


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('reference')
  experiment.train_and_evaluate(_config(), str(workdir), log=_quiet)
  return workdir


def _stop_after_checkpoint(monkeypatch, at_step):
  save = Checkpointer.save

  def stopping(self, step, *args, **kwargs):
    seconds = save(self, step, *args, **kwargs)
    if step == at_step:
      raise _Stop()
    return seconds
  monkeypatch.setattr(Checkpointer, 'save', stopping)


@pytest.mark.parametrize('damage', ['torn', 'missing'])
def test_a_torn_or_missing_row_is_restored_from_the_checkpoint(tmp_path, monkeypatch,
                                                               reference, damage):
  with monkeypatch.context() as m:
    _stop_after_checkpoint(m, 200)
    with pytest.raises(_Stop):
      experiment.train_and_evaluate(_config(), str(tmp_path), log=_quiet)
  path = tmp_path / 'metrics.jsonl'
  text = path.read_text()
  last = text[:-1].rfind('\n') + 1
  assert '"step": 200' in text[last:]  # the checkpoint's row is the last line
  path.write_text(text[:last] + (text[last:last + 25] if damage == 'torn' else ''))
  lines = []
  experiment.train_and_evaluate(_config(), str(tmp_path), log=lines.append)
  assert any('from the checkpoint' in line for line in lines), lines
  assert path.read_bytes() == (reference / 'metrics.jsonl').read_bytes()
  assert (tmp_path / 'params.npz').read_bytes() == (reference / 'params.npz').read_bytes()


def _enospc(*args, **kwargs):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize('writer', ['metrics', 'checkpoint', 'tensorboard'])
def test_a_full_disk_at_any_writer_is_one_line(tmp_path, monkeypatch, writer):
  # The TensorBoard writer fails too, so closing it after the first error must stay quiet.
  monkeypatch.setattr(tensorboardX.SummaryWriter, 'flush', _enospc)
  if writer == 'metrics':
    monkeypatch.setattr(experiment.io_utils, 'append_jsonl', _enospc)
  elif writer == 'checkpoint':
    save = Checkpointer.save

    def failing(self, step, *args, **kwargs):
      self._manager.save = _enospc  # orbax's own write call fails
      return save(self, step, *args, **kwargs)
    monkeypatch.setattr(Checkpointer, 'save', failing)
  with pytest.raises(UserError) as err:
    experiment.train_and_evaluate(_config(), str(tmp_path), log=_quiet)
  message = str(err.value)
  assert '\n' not in message and 'No space left on device' in message, message
  assert {'metrics': 'cannot write', 'checkpoint': 'cannot write the checkpoint',
          'tensorboard': 'cannot write'}[writer] in message
