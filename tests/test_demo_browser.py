"""The demo in a real browser: headless Chromium (the distribution's package) driven by
Playwright trains the lecture's points under each loss, edits W by typing, drags, adds and
removes points, exports, and runs the export through hinge_jax.main to the page's W.

Skipped only where /usr/bin/chromium (or $CHROMIUM) is missing and CI is not set; under CI
(`.ci/run` installs chromium) it must run. The updates/s figure is printed, not asserted.
"""

import os
import time

import numpy as np
import pytest

from hinge_jax import losses
from hinge_jax import main as hinge_main
from hinge_jax.demo import server

CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage']  # containers' /dev/shm is small
if not os.environ.get('CI'):
  if not os.path.exists(CHROMIUM):
    pytest.skip(f'{CHROMIUM} is missing (apt-get install chromium; CI installs it)',
                allow_module_level=True)
  pytest.importorskip('playwright', reason='pip install -e ".[test]" brings playwright')

from playwright.sync_api import sync_playwright  # noqa: E402

from test_demo_api import call, load_config  # noqa: E402

STATE = 'JSON.parse(JSON.stringify(window.demo.state, (k, v) => v instanceof Set ? [...v] : v))'
IDLE = '!window.demo.state.running && !window.demo.state.busy'
FRESH = ('window.demo.state.reportVersion === window.demo.state.version && '
         '!window.demo.state.busy')  # the report shown is of the problem as it is now


@pytest.fixture(scope='module')
def address():
  httpd = server.start_in_thread()
  yield httpd.server_address[:2]
  server.stop(httpd)


@pytest.fixture(scope='module')
def browser():
  with sync_playwright() as p:
    chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser, address):
  """A fresh page on the lecture's 9 points, its first report shown."""
  page = browser.new_page(viewport={'width': 1100, 'height': 1000}, accept_downloads=True)
  errors = []
  page.on('pageerror', lambda e: errors.append(str(e)))
  page.goto('http://{}:{}/'.format(*address))
  page.wait_for_function('window.demo && window.demo.state.points.length === 9 && '
                         + FRESH)
  yield page
  page.close()
  assert not errors, errors


def state(page) -> dict:
  return page.evaluate(STATE)


def set_slider(page, selector: str, value: float) -> None:
  page.eval_on_selector(selector, '(el, v) => { el.value = String(v); '
                        'el.dispatchEvent(new Event("input", {bubbles: true})); }', value)


def objective(s: dict) -> tuple[float, np.ndarray, float]:
  """(total loss, per-point losses, accuracy) of the page's state by hinge_jax directly."""
  w, b = np.asarray(s['W'], np.float32), np.asarray(s['b'], np.float32)
  x, y = np.asarray(s['points'], np.float32), np.asarray(s['labels'], np.int32)
  scores = x @ w.T + b
  per = np.asarray(losses.get(s['loss'])(scores, y, margin=np.float32(s['margin']),
                                         squared=s['squared']))
  total = per.mean() + np.float32(s['reg']) * np.sum(w * w)
  return float(total), per, float(np.mean(scores.argmax(1) == y))


def shown(page, cell: str) -> float:
  return float(page.get_attribute(f'#{cell}', 'data-value'))


def point_xy(page, x: float, y: float) -> tuple[float, float]:
  """Page coordinates of the plane's point (x, y) (the view is [-2, 2]²)."""
  box = page.eval_on_selector('#plane', 'el => { const r = el.getBoundingClientRect(); '
                              'return [r.left + el.clientLeft, r.top + el.clientTop, '
                              'el.clientWidth, el.clientHeight]; }')
  return box[0] + (x + 2) / 4 * box[2], box[1] + (2 - y) / 4 * box[3]


@pytest.mark.parametrize('loss', ['multiclass_svm', 'one_vs_all', 'crammer_singer',
                                  'softmax_cross_entropy'])
def test_trains_the_lecture_points_to_100_percent(page, address, loss):
  page.select_option('#loss', loss)
  set_slider(page, '#lr', -0.5)  # step size 0.316
  page.wait_for_function(FRESH)
  before = shown(page, 'total-loss')
  assert before == pytest.approx(objective(state(page))[0], rel=1e-5)
  page.click('#run')
  page.wait_for_function('window.demo.state.report.accuracy === 1', timeout=20_000)
  page.click('#run')
  page.wait_for_function(IDLE)
  s = state(page)
  total, per, accuracy = objective(s)
  assert s['steps'] > 0 and page.inner_text('#run') == 'start'
  assert shown(page, 'total-loss') == pytest.approx(total, rel=1e-5)  # hinge_jax's, directly
  keys = ('W', 'b', 'points', 'labels', 'loss', 'squared', 'margin', 'reg')
  status, answer = call(address, '/api/evaluate', {k: s[k] for k in keys})
  assert status == 200 and shown(page, 'total-loss') == pytest.approx(answer['loss'], rel=1e-6)
  assert shown(page, 'total-loss') < before
  assert shown(page, 'accuracy') == pytest.approx(accuracy)
  table = [float(page.inner_text(f'#points tbody tr:nth-child({i + 1}) td:nth-child(8)'))
           for i in range(9)]
  np.testing.assert_allclose(table, per, atol=1e-3)


def test_typing_a_weight_changes_regions_and_table(page):
  canvas = page.eval_on_selector('#plane', 'el => el.toDataURL()')
  row0 = page.inner_text('#points tbody tr:first-child')
  page.fill('#w-0-0', '-2.5')
  page.wait_for_function(FRESH)
  s = state(page)
  assert s['W'][0][0] == -2.5 and s['steps'] == 0
  assert page.eval_on_selector('#plane', 'el => el.toDataURL()') != canvas
  assert page.inner_text('#points tbody tr:first-child') != row0
  x, y = s['points'][0]
  s0 = -2.5 * x + s['W'][0][1] * y + s['b'][0]
  assert float(page.inner_text('#points tbody tr:first-child td:nth-child(5)')) == (
      pytest.approx(s0, abs=1e-3))
  assert shown(page, 'total-loss') == pytest.approx(objective(s)[0], rel=1e-5)

  requests = s['requests']
  for text, problem in (('abc', 'is not a number'), ('1e999', 'is not finite'),
                        ('', 'empty')):
    page.fill('#w-0-1', text)
    assert problem in page.inner_text('#w-0-1-err')
    assert 'bad' in page.get_attribute('#w-0-1', 'class')
    assert page.is_disabled('#step') and 'Fix the field' in page.inner_text('#status')
  page.fill('#margin', '-1')
  assert 'Δ must be > 0' in page.inner_text('#margin-err')
  page.wait_for_timeout(200)
  after = state(page)
  assert after['requests'] == requests and after['W'][0][1] == s['W'][0][1]  # never sent
  assert after['margin'] == s['margin']
  page.fill('#margin', '1')
  page.fill('#w-0-1', '0.5')
  page.wait_for_function(f'window.demo.state.invalid.size === 0 && {FRESH}')
  assert state(page)['W'][0][1] == 0.5
  assert not page.is_disabled('#step') and page.inner_text('#w-0-1-err') == ''
  page.click('#w-0-1 + button')  # the increment button beside the field
  assert state(page)['W'][0][1] == pytest.approx(0.6)


def test_drag_add_and_remove_points(page):
  page.mouse.move(*point_xy(page, 0.5, 0.4))
  page.mouse.down()
  page.mouse.move(*point_xy(page, 1.2, -1.5), steps=6)
  page.mouse.up()
  page.wait_for_function(FRESH)
  s = state(page)
  assert s['points'][0] == pytest.approx([1.2, -1.5], abs=0.02) and len(s['points']) == 9
  assert page.inner_text('#points tbody tr:first-child td:nth-child(3)') == (
      f'{s["points"][0][1]:.3f}')
  assert shown(page, 'total-loss') == pytest.approx(objective(s)[0], rel=1e-5)

  page.click('#clear')
  page.wait_for_function('window.demo.state.points.length === 0')
  assert 'No points' in page.inner_text('#status') and page.is_disabled('#step')
  page.check('input[name=cls][value="1"]')
  page.mouse.click(*point_xy(page, -1, 1))
  page.wait_for_function('window.demo.state.points.length === 1')
  assert 'All points are of class 1' in page.inner_text('#status')
  page.check('input[name=cls][value="2"]')
  page.mouse.click(*point_xy(page, 1, -1))
  page.wait_for_function(f'window.demo.state.points.length === 2 && {FRESH}')
  s = state(page)
  assert s['labels'] == [1, 2] and s['points'][1] == pytest.approx([1, -1], abs=0.02)
  assert not page.is_disabled('#step') and page.inner_text('#status') == ''
  page.click('#points tbody tr:first-child button.remove')
  page.wait_for_function('window.demo.state.points.length === 1')
  page.keyboard.down('Shift')
  page.mouse.click(*point_xy(page, 1, -1))
  page.keyboard.up('Shift')
  page.wait_for_function('window.demo.state.points.length === 0')


def test_export_runs_through_main_to_the_same_weights(page, tmp_path):
  page.select_option('#loss', 'crammer_singer')
  page.check('#squared')
  set_slider(page, '#lr', -1)
  page.wait_for_function(FRESH)
  assert state(page)['squared']
  clicks = '(id) => { const b = document.getElementById(id); b.click(); b.click(); b.click(); }'
  page.evaluate(clicks, 'run')  # start, stop and start at once: still one step at a time
  page.wait_for_function('window.demo.state.steps >= 8')
  page.click('#run')
  page.wait_for_function(IDLE)
  page.evaluate(clicks, 'step')  # clicks while a step is under way do nothing
  page.wait_for_function(IDLE)
  steps = state(page)['steps']
  page.click('#export')
  page.wait_for_selector('#download-py')
  for name in ('npz', 'py'):
    with page.expect_download() as download:
      page.click(f'#download-{name}')
    download.value.save_as(tmp_path / download.value.suggested_filename)
  config = load_config(str(tmp_path / 'demo_config.py'))
  assert (config.num_steps, config.loss.name, config.loss.squared) == (
      steps, 'crammer_singer', True)
  hinge_main.train(config, str(tmp_path / 'run'))
  trained, s = np.load(tmp_path / 'run' / 'params.npz'), state(page)
  np.testing.assert_allclose(trained['W'], s['W'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(trained['b'], s['b'], rtol=1e-5, atol=1e-6)


def test_updates_per_second_and_a_screenshot(page, tmp_path, capsys):
  """A benchmark: repeated step + redraw for 2 s on the lecture's points (printed)."""
  page.click('#run')
  page.wait_for_function('window.demo.state.updates >= 3')
  first = page.evaluate('[window.demo.state.updates, performance.now()]')
  time.sleep(2)
  last = page.evaluate('[window.demo.state.updates, performance.now()]')
  page.click('#run')
  page.wait_for_function(IDLE)
  rate = (last[0] - first[0]) / ((last[1] - first[1]) / 1000)
  with capsys.disabled():
    print(f'\ndemo: {rate:.1f} updates/s (one step request + redraw each), '
          f'{last[0] - first[0]} updates in {(last[1] - first[1]) / 1000:.2f} s')
  assert last[0] > first[0]
  path = tmp_path / 'demo.png'
  page.screenshot(path=str(path), full_page=True)
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  with capsys.disabled():
    print(f'demo: screenshot {path}')
