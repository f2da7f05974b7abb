"""benchmarks/gpu_profile.py's reading of a profiler trace, on hand-written traces."""

import gzip
import json
import os

import pytest

from benchmarks import gpu_profile


def _write_trace(root, events):
  folder = os.path.join(root, 'plugins', 'profile', '2026_01_01_00_00_00')
  os.makedirs(folder)
  with gzip.open(os.path.join(folder, 'perfetto_trace.json.gz'), 'wt') as f:
    json.dump({'traceEvents': events}, f)


def _meta(pid, name):
  return {'ph': 'M', 'pid': pid, 'name': 'process_name', 'args': {'name': name}}


def test_gpu_events_keeps_only_the_gpu_process_complete_events(tmp_path):
  _write_trace(str(tmp_path), [
      _meta(1, '/device:GPU:0'), _meta(701, '/host:CPU'),
      {'ph': 'X', 'pid': 1, 'tid': 14, 'ts': 10.0, 'dur': 2.0, 'name': 'gemm'},
      {'ph': 'X', 'pid': 701, 'tid': 3, 'ts': 9.0, 'dur': 50.0, 'name': 'PjitFunction'},
      {'ph': 'i', 'pid': 1, 'tid': 14, 'ts': 11.0, 'name': 'marker'},
      {'ph': 'X', 'pid': 1, 'tid': 15, 'ts': 12.0, 'dur': 1.0, 'name': 'MemcpyH2D'}])
  events = gpu_profile.gpu_events(str(tmp_path))
  assert [e['name'] for e in events] == ['gemm', 'MemcpyH2D']


def test_gpu_events_says_which_folder_holds_no_trace(tmp_path):
  with pytest.raises(FileNotFoundError, match='no perfetto trace'):
    gpu_profile.gpu_events(str(tmp_path))


def test_summarize_counts_overlapping_kernels_once_in_the_busy_time():
  events = [{'ts': 0.0, 'dur': 10.0, 'name': 'a'}, {'ts': 5.0, 'dur': 10.0, 'name': 'b'},
            {'ts': 30.0, 'dur': 4.0, 'name': 'a'}, {'ts': 31.0, 'dur': 1.0, 'name': 'c'}]
  out = gpu_profile.summarize(events, calls=2, wall_s=100e-6)
  assert out['busy_us_per_call'] == pytest.approx((15.0 + 4.0) / 2)  # [0, 15] ∪ [30, 34]
  assert out['wall_us_per_call'] == pytest.approx(50.0)
  assert out['events_per_call'] == 2.0
  assert out['kernels'][0] == {'name': 'a', 'us_per_call': 7.0, 'launches_per_call': 1.0}
  assert [k['name'] for k in out['kernels']] == ['a', 'b', 'c']  # by time, largest first
