"""Prepares a TFDS dataset: `python -m hinge_jax.prepare --dataset=cifar10 --data_dir=DIR`.

Downloading and preparing a TFDS dataset needs TensorFlow and a network, which training
does not: install them apart with `pip install -r requirements-prepare.txt`, run this once
(on any machine; then copy DIR), and train with `--config.dataset.data_dir=DIR`. The data
is written in ArrayRecord format (what `tfds.data_source` reads without TensorFlow), then
decoded once into the `.npy` cache that training loads.

Exit codes: 0 done, 2 bad input or a missing requirement (one line on stderr).
"""

from absl import flags

from hinge_jax import cli_utils
from hinge_jax.datasets import tfds_data
from hinge_jax.errors import ConfigError, DataError, UserError

_DATASET = flags.DEFINE_string('dataset', None, 'TFDS name, e.g. cifar10, mnist, cifar100.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', "Where to prepare it ('' = TFDS's default).")
_CACHE = flags.DEFINE_bool('cache', True, 'Also decode it into the .npy cache training reads.')


def require_tensorflow() -> None:
  """Stops with one line when TensorFlow, which TFDS's builders need to write data, is absent."""
  try:
    import tensorflow  # noqa: F401 - TFDS's builders need it to download and encode
  except ImportError:
    raise UserError('preparing a TFDS dataset needs TensorFlow; install it with: '
                    'pip install -r requirements-prepare.txt')


def make_builder(tfds, name: str, data_dir: str):
  """TFDS's builder of `name` in `data_dir`, writing ArrayRecord files."""
  return tfds.builder(name, data_dir=data_dir, file_format='array_record')


def prepare(name: str, data_dir: str, *, cache: bool = True, log=print) -> str:
  """Downloads and prepares `name` as ArrayRecord in `data_dir`; returns the version folder.

  Raises:
    UserError: TensorFlow is missing, the name is unknown, or TFDS fails (one line).
  """
  require_tensorflow()
  tfds = tfds_data._import_tfds(name)
  data_dir = data_dir or tfds_data.default_data_dir()
  try:
    builder = make_builder(tfds, name, data_dir)
  except Exception as e:  # noqa: BLE001 - an unknown name: one line
    if type(e).__name__ == 'DatasetNotFoundError':
      raise ConfigError(f'--dataset={name!r} is not a TFDS dataset; e.g. {tfds_data.EXAMPLES}')
    raise DataError(f'--dataset={name!r}: TFDS cannot open it ({type(e).__name__})')
  tfds_data._check_features(name, builder.info.features)
  log(f'preparing {name} in {builder.data_dir} (array_record) ...')
  try:
    builder.download_and_prepare(file_format='array_record')
  except Exception as e:  # noqa: BLE001 - network, disk: one line
    first = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise DataError(f'preparing {name} in {data_dir} failed ({type(e).__name__}: {first})')
  if cache:
    arrays, _ = tfds_data.load_arrays(name, data_dir)
    log(f'cached in {tfds_data.cache_dir(name, data_dir)}: '
        + ', '.join(f'{k} {v.dtype}{list(v.shape)}' for k, v in arrays.items()))
  return str(builder.data_dir)


def main(argv):
  del argv  # cli_utils.parse_flags refuses positional arguments
  prepare(_DATASET.value, _DATA_DIR.value, cache=_CACHE.value)  # a UserError → one line


if __name__ == '__main__':
  flags.mark_flag_as_required('dataset')
  cli_utils.run(main)
