"""The demo's JSON API, in-process: every answer equals hinge_jax's losses and `jax.grad`
computed directly (and the plain NumPy references), bad requests get a 400 with one line, the
server stays up; the static files, the export, `python -m hinge_jax.demo`'s errors and Ctrl-C."""

import _thread
import base64
import collections
import http.client
import json
import os
import signal
import socket
import threading

import jax
import ml_collections
import numpy as np
import pytest
from absl import flags

import reference
from helpers import run_main
from hinge_jax import cli_utils, initial, losses, objective
from hinge_jax.demo import __main__ as demo_main
from hinge_jax.demo import api, export, presets, schema, server
from hinge_jax.errors import ConfigError

NUMPY_LOSSES = {'multiclass_svm': (reference.ww_svm, reference.ww_svm_grad),
                'one_vs_all': (reference.one_vs_all, reference.one_vs_all_grad),
                'crammer_singer': (reference.crammer_singer, reference.crammer_singer_grad),
                'softmax_cross_entropy': (reference.softmax, reference.softmax_grad)}
Spec = collections.namedtuple('Spec', 'loss squared reg regularize_bias bias_trick')
CASES = [(name, False) for name in schema.LOSSES] + [('multiclass_svm', True)]


@pytest.fixture(scope='module')
def url():
  httpd = server.start_in_thread()
  yield httpd.server_address[:2]
  server.stop(httpd)


def call(address, path, body, method='POST', headers=None):
  """(status, parsed JSON or raw bytes) of one request on a fresh connection."""
  conn = http.client.HTTPConnection(*address, timeout=30)
  data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
  conn.request(method, path, body=data, headers=headers or {'Content-Type': 'application/json'})
  response = conn.getresponse()
  raw = response.read()
  conn.close()
  kind = response.getheader('Content-Type', '')
  return response.status, (json.loads(raw) if kind.startswith('application/json') else raw)


def random_problem(seed, loss='multiclass_svm', squared=False, n=11):
  rng = np.random.default_rng(seed)
  return {'W': rng.standard_normal((3, 2)).tolist(), 'b': rng.standard_normal(3).tolist(),
          'points': rng.uniform(-2, 2, (n, 2)).round(3).tolist(),
          'labels': [int(c) for c in rng.permutation(np.arange(n) % 3)],
          'loss': loss, 'squared': squared, 'margin': 0.8, 'reg': 0.05, 'lr': 0.3}


def f32(request):
  return (np.asarray(request['W'], np.float32), np.asarray(request['b'], np.float32),
          np.asarray(request['points'], np.float32), np.asarray(request['labels'], np.int32))


@pytest.mark.parametrize('loss,squared', CASES)
def test_evaluate_and_step_equal_hinge_jax_and_numpy(url, loss, squared):
  request = random_problem(1, loss, squared)
  w, b, x, y = f32(request)
  status, got = call(url, '/api/evaluate', request)
  assert status == 200, got
  scores = x @ w.T + b
  per = np.asarray(losses.get(loss)(scores, y, margin=np.float32(0.8), squared=squared))
  np.testing.assert_allclose(got['scores'], scores, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got['losses'], per, rtol=1e-6, atol=1e-6)
  ref_loss, ref_grad = NUMPY_LOSSES[loss]
  numpy_per = [ref_loss(s.astype(np.float64), c, 0.8, squared) for s, c in zip(scores, y)]
  np.testing.assert_allclose(got['losses'], numpy_per, rtol=1e-5, atol=1e-6)
  reg = 0.05 * np.sum(w.astype(np.float64) ** 2)  # the bias is not penalized
  np.testing.assert_allclose([got['data_loss'], got['reg_loss'], got['loss']],
                             [np.mean(per), reg, np.mean(per) + reg], rtol=1e-5)
  assert got['accuracy'] == pytest.approx(np.mean(scores.argmax(1) == y))

  status, stepped = call(url, '/api/step', request)
  assert status == 200, stepped
  spec = Spec(loss=loss, squared=squared, reg='l2', regularize_bias=False, bias_trick=False)
  hp = {'margin': np.float32(0.8), 'reg_strength': np.float32(0.05), 'l1_ratio': np.float32(0.5)}
  grads = jax.jit(jax.grad(objective.objective), static_argnames='spec')(
      {'W': w, 'b': b}, x, y, hp, spec=spec)
  np.testing.assert_allclose(stepped['W'], w - np.float32(0.3) * grads['W'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stepped['b'], b - np.float32(0.3) * grads['b'], rtol=1e-5, atol=1e-6)
  d_scores = np.array([ref_grad(s.astype(np.float64), c, 0.8, squared)
                       for s, c in zip(scores, y)]) / len(y)
  numpy_w = w - 0.3 * (d_scores.T @ x + 2 * 0.05 * w)
  np.testing.assert_allclose(stepped['W'], numpy_w, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stepped['b'], b - 0.3 * d_scores.sum(0), rtol=1e-4, atol=1e-5)
  new_scores = x @ np.asarray(stepped['W'], np.float32).T + np.asarray(stepped['b'], np.float32)
  np.testing.assert_allclose(stepped['scores'], new_scores, rtol=1e-5, atol=1e-5)


def test_moving_and_adding_points_does_not_recompile(url):
  request = random_problem(2, n=5)
  assert call(url, '/api/step', request)[0] == 200
  program = api.program('multiclass_svm', False)
  compiled = program._cache_size()
  for n in (6, 9, 16):  # the same bucket of 16 padded points
    assert call(url, '/api/step', random_problem(3 + n, n=n))[0] == 200
  assert program._cache_size() == compiled
  assert call(url, '/api/step', random_problem(4, n=17))[0] == 200  # the next bucket
  assert program._cache_size() == compiled + 1


def _bad(key, value):
  request = random_problem(5)
  request[key] = value
  return request


BAD = {
    'unknown loss': (_bad('loss', 'hinge'), 'loss="hinge" is not known'),
    'W of the wrong shape': (_bad('W', [[1, 2], [3, 4]]), 'W is a list of 2'),
    'a string in b': (_bad('b', [0, 'x', 0]), 'b[1]="x" is not a number'),
    'a label of no class': (_bad('labels', [3] + [0] * 10), 'labels[0]=3 is not a class'),
    'fewer labels than points': (_bad('labels', [0, 1]), '2 labels for 11 points'),
    'margin 0': (_bad('margin', 0), 'margin=0 must be > 0'),
    'negative λ': (_bad('reg', -1), 'reg=-1 must be >= 0'),
    'too many points': (dict(_bad('points', [[0.0, 0.0]] * 1025), labels=[0] * 1025),
                        '1025 points are too many'),
    'no step size': ({k: v for k, v in _bad('lr', 0).items() if k != 'lr'},
                     "no field 'lr'"),
    'beyond float32': (_bad('W', [[1e39, 0], [0, 0], [0, 0]]), "beyond float32's range"),
    'a huge integer': (_bad('reg', 10**400), 'reg is not a finite number'),
    'a loss that overflows': (dict(_bad('W', [[1e20, 1e20]] * 3), squared=True),
                              'overflowed float32'),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_requests_get_400_with_one_line(url, case):
  request, expected = BAD[case]
  status, got = call(url, '/api/step', request)
  assert status == 400
  assert expected in got['error'] and '\n' not in got['error']


@pytest.mark.parametrize('body,expected', [
    (b'{"W": [[NaN, 0], [0, 0], [0, 0]]}', 'NaN is not a finite number'),
    (b'{"margin": Infinity}', 'Infinity is not a finite number'),
    (b'{"W": [[1, 2]', 'malformed JSON'),
    (b'[1, 2]', 'is a JSON list, not an object'),
    (b'\xff\xfe', 'not UTF-8'),
])
def test_malformed_bodies_get_400_and_the_server_stays_up(url, body, expected):
  status, got = call(url, '/api/evaluate', body, headers={'Content-Type': 'application/json'})
  assert status == 400 and expected in got['error']
  assert call(url, '/api/evaluate', random_problem(6))[0] == 200


def test_a_step_needs_points_of_two_classes(url):
  request = dict(random_problem(7), points=[], labels=[])
  assert call(url, '/api/step', request) == (400, {'error': 'there are no points; add points '
                                                  'of at least 2 classes to train'})
  status, got = call(url, '/api/evaluate', request)  # the page still shows W's penalty
  assert status == 200 and got['loss'] is None and got['reg_loss'] > 0
  request = dict(random_problem(7), points=[[0, 0], [1, 1]], labels=[2, 2])
  status, got = call(url, '/api/step', request)
  assert status == 400 and 'of class 2; add points of another class' in got['error']


def test_size_limit_traversal_and_unknown_routes(url):
  status, got = call(url, '/api/evaluate', b' ' * (schema.MAX_BODY_BYTES + 1))
  assert status == 413 and 'more than the' in got['error']
  for path in ('/../server.py', '/%2e%2e/server.py', '/..%2fserver.py', '/static/../api.py'):
    status, got = call(url, path, None, method='GET')
    assert status in (403, 404) and 'error' in got, path
  assert call(url, '/server.py', None, method='GET')[0] == 404  # not a static file type
  status, got = call(url, '/api/evaluate', random_problem(8),
                     headers={'Content-Type': 'text/plain'})
  assert status == 415 and 'application/json' in got['error']
  assert call(url, '/api/nothing', {})[0] == 404
  status, page = call(url, '/', None, method='GET')
  assert status == 200 and b'<script src="app.js"></script>' in page
  status, script = call(url, '/app.js', None, method='GET')
  assert status == 200 and b'/api/' in script
  assert call(url, '/api/evaluate', random_problem(8))[0] == 200  # still up


def test_presets(url):
  status, got = call(url, '/api/preset', {'name': 'lecture'})
  assert status == 200 and len(got['points']) == 9
  assert sorted(got['labels']) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  first = call(url, '/api/preset', {'name': 'blobs', 'seed': 3})[1]
  assert first == call(url, '/api/preset', {'name': 'blobs', 'seed': 3})[1]
  assert first != call(url, '/api/preset', {'name': 'blobs', 'seed': 4})[1]
  assert np.abs(first['points']).max() <= 2.5 and len(set(first['labels'])) == 3
  x, y = presets.rings(0)  # no line separates class 0 (the disc) from the rings around it
  centre = np.linalg.norm(x, axis=1)
  assert centre[y == 0].max() < centre[y == 1].min() < centre[y == 1].max() < centre[y == 2].min()
  assert call(url, '/api/preset', {'name': 'moons'})[0] == 400


def load_config(path: str) -> ml_collections.ConfigDict:
  """The config file as `python -m hinge_jax.main --config=PATH` loads it."""
  values = flags.FlagValues()
  cli_utils.config_flag(path, flag_values=values, argv=['main'])
  cli_utils.parse_flags(['main', f'--config={path}'], values)
  return values.config


def write_export(folder, got: dict) -> str:
  with open(os.path.join(folder, got['npz_name']), 'wb') as f:
    f.write(base64.b64decode(got['npz']))
  path = os.path.join(folder, got['config_name'])
  with open(path, 'w') as f:
    f.write(got['config'])
  return path


def test_export_holds_the_problem_and_a_config_main_loads(url, tmp_path):
  request = random_problem(9, 'one_vs_all', n=12)
  status, got = call(url, '/api/export', dict(request, steps=7))
  assert status == 200, got
  config = load_config(write_export(tmp_path, got))
  w, b, x, y = f32(request)
  with np.load(config.dataset.path) as arrays:  # the npz beside the config file
    for key, value in {'x_train': x, 'y_train': y, 'W': w, 'b': b}.items():
      np.testing.assert_array_equal(arrays[key], value)
  assert config.init_params_path == config.dataset.path
  assert (config.loss.name, config.loss.margin, config.loss.squared) == ('one_vs_all', 0.8, False)
  assert (config.reg.name, config.reg.strength, config.reg.regularize_bias) == ('l2', 0.05, False)
  assert (config.optimizer.name, config.optimizer.learning_rate, config.batch_size) == (
      'sgd', 0.3, 0)
  assert (config.num_steps, config.dataset.center, config.dataset.scale) == (7, False, 1.0)
  assert call(url, '/api/export', dict(request, steps=0))[1]['steps'] == export.STEPS_IF_NONE
  assert call(url, '/api/export', dict(request, steps=-1))[0] == 400


def test_init_params_file_errors_are_one_line(tmp_path):
  params = {'W': jax.numpy.zeros((1, 3, 2)), 'b': jax.numpy.zeros((1, 3))}
  with pytest.raises(ConfigError, match='is not a file'):
    initial.load(str(tmp_path / 'none.npz'), params)
  np.savez(tmp_path / 'w.npz', W=np.ones((3, 2)))
  with pytest.raises(ConfigError, match="has no array 'b'"):
    initial.load(str(tmp_path / 'w.npz'), params)
  np.savez(tmp_path / 'w.npz', W=np.ones((2, 3)), b=np.ones(3))
  with pytest.raises(ConfigError, match=r'the model needs real numbers of shape \(3, 2\)'):
    initial.load(str(tmp_path / 'w.npz'), params)
  np.savez(tmp_path / 'w.npz', W=np.full((3, 2), np.nan), b=np.ones(3))
  with pytest.raises(ConfigError, match='NaN or infinite'):
    initial.load(str(tmp_path / 'w.npz'), params)
  np.savez(tmp_path / 'w.npz', W=np.arange(6.0).reshape(3, 2), b=np.ones(3))
  np.testing.assert_array_equal(initial.load(str(tmp_path / 'w.npz'), params)['W'][0],
                                np.arange(6.0).reshape(3, 2))


def test_a_port_in_use_is_one_error_line():
  """The real command, once: exit 2 and one line naming --port."""
  with socket.socket() as busy:
    busy.bind(('127.0.0.1', 0))
    busy.listen()
    port = busy.getsockname()[1]
    out = run_main(f'--port={port}', module='hinge_jax.demo', timeout=120)
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip().splitlines() == [
      f'error: port {port} on 127.0.0.1 is in use (another demo?); choose another with '
      f'--port={port + 1}, or --port=0 for any free one']


def test_ctrl_c_stops_the_server_after_the_background_warm_up(capsys):
  """Ctrl-C (KeyboardInterrupt in the main thread) ends `serve` cleanly, and not before the
  background compiles have stopped: a process exiting in the middle of one aborts."""
  httpd = demo_main.bind('127.0.0.1', 0)
  port = httpd.server_address[1]
  threading.Timer(0.5, lambda: call(('127.0.0.1', port), '/api/info', {})).start()
  interrupt = threading.Timer(1.0, _thread.interrupt_main)
  # Python's own SIGINT handler, which a shell's background job starts without (SIGINT
  # ignored): interrupt_main does nothing then
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    interrupt.start()
    demo_main.serve(httpd)
  finally:
    signal.signal(signal.SIGINT, previous)
  assert capsys.readouterr().err == 'stopped\n'
  assert not [t for t in threading.enumerate() if t.name == 'warm-up']
  with pytest.raises(ConnectionRefusedError):
    call(('127.0.0.1', port), '/api/info', {})
