"""The demo's small local web server: the page's static files and the JSON API.

GET serves only the files of the package's `static/` folder (a path that leaves it is refused
with 403); POST /api/<name> takes a JSON object of at most `schema.MAX_BODY_BYTES` and answers
JSON (Content-Type application/json, which a cross-site form cannot send unasked). A bad
request gets a 400 (413 when too large) with `{"error": one line}`; the server stays up.
HTTP/1.1 keep-alive: the page's repeated steps reuse one connection.
"""

import http.server
import json
import os
import posixpath
import socketserver
import sys
import threading
import urllib.parse

from hinge_jax.demo import api, export, presets, schema

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
         '.css': 'text/css; charset=utf-8', '.png': 'image/png', '.svg': 'image/svg+xml'}


def _info(data: dict) -> dict:
  del data
  return {'losses': list(schema.LOSSES), 'presets': list(presets.PRESETS),
          'max_points': schema.MAX_POINTS, 'num_classes': schema.NUM_CLASSES}


ROUTES = {
    'evaluate': lambda data: api.evaluate(schema.problem(data, step=False)),
    'step': lambda data: api.step(schema.problem(data)),
    'preset': presets.preset,
    'export': export.export,
    'info': _info,
}


def static_path(url_path: str) -> str | None:
  """The file under STATIC that a URL path names; None for a path that leaves STATIC."""
  path = urllib.parse.unquote(url_path.split('?', 1)[0].split('#', 1)[0])
  if path in ('', '/'):
    path = '/index.html'
  parts = path.split('/')
  if '..' in parts or '\\' in path or '\0' in path:
    return None
  full = os.path.realpath(os.path.join(STATIC, posixpath.normpath(path).lstrip('/')))
  if os.path.commonpath([full, os.path.realpath(STATIC)]) != os.path.realpath(STATIC):
    return None
  return full


class Handler(http.server.BaseHTTPRequestHandler):
  """Static files (GET) and the JSON API (POST /api/<name>)."""
  protocol_version = 'HTTP/1.1'
  server_version = 'hinge_jax-demo'
  disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (~40 ms a reply)
  quiet = True

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    if not self.quiet:
      super().log_message(format, *args)

  def _send(self, code: int, body: bytes, content_type: str) -> None:
    self.send_response(code)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    self.send_header('Cache-Control', 'no-store')
    self.send_header('X-Content-Type-Options', 'nosniff')
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(body)

  def _json(self, code: int, obj: dict) -> None:
    self._send(code, json.dumps(obj, allow_nan=False).encode(), 'application/json')

  def _error(self, code: int, message: str) -> None:
    self._json(code, {'error': message})

  def do_GET(self):  # noqa: N802 - http.server's name
    if self.path.startswith('/api/'):
      self._error(405, f'{self.path} takes POST with a JSON object')
      return
    path = static_path(self.path)
    if path is None:
      self._error(403, f'{self.path!r} is outside the demo\'s files; ask for / instead')
      return
    kind = TYPES.get(os.path.splitext(path)[1])
    if kind is None or not os.path.isfile(path):
      self._error(404, f'{self.path!r} is not one of the demo\'s files; ask for / instead')
      return
    with open(path, 'rb') as f:
      self._send(200, f.read(), kind)

  do_HEAD = do_GET

  def _body(self) -> bytes | None:
    """The request body, or None after answering an unusable one (411, 415, 413)."""
    length = self.headers.get('Content-Length')
    if self.headers.get('Transfer-Encoding') or length is None or not length.isdigit():
      self.close_connection = True
      self._error(411, 'send the JSON object with a Content-Length header')
      return None
    kind = self.headers.get('Content-Type', '').split(';')[0].strip().lower()
    if kind != 'application/json':  # a cross-site form cannot send this without asking first
      self.close_connection = True
      self._error(415, f'the request\'s Content-Type is {kind or "missing"}; send the JSON '
                       f'object as application/json')
      return None
    if int(length) > schema.MAX_BODY_BYTES:
      self.close_connection = True  # the unread body must not be taken for the next request
      self._error(413, f'the request has {int(length)} bytes, more than the '
                       f'{schema.MAX_BODY_BYTES} allowed; send fewer points')
      return None
    return self.rfile.read(int(length))

  def do_POST(self):  # noqa: N802 - http.server's name
    name = self.path.split('?', 1)[0].removeprefix('/api/')
    body = self._body()
    if body is None:
      return
    if not self.path.startswith('/api/') or name not in ROUTES:
      self._error(404, f'no API {self.path!r}; the API is POST /api/'
                       f'{{{",".join(ROUTES)}}}')
      return
    try:
      self._json(200, ROUTES[name](schema.parse_json(body)))
    except schema.RequestError as e:
      self._error(400, str(e))
    except Exception as e:  # noqa: BLE001 - the server stays up; the page shows the line
      print(f'demo: {self.path} failed: {type(e).__name__}: {e}', file=sys.stderr)
      self._error(500, f'the server failed on {self.path} ({type(e).__name__}: '
                       f'{" ".join(str(e).split())[:200]})')


class Server(http.server.ThreadingHTTPServer):
  """One thread per connection; binding skips HTTPServer's reverse DNS lookup of the host."""
  daemon_threads = True

  def server_bind(self):
    socketserver.TCPServer.server_bind(self)
    self.server_name, self.server_port = self.server_address[:2]


def make_server(host: str = '127.0.0.1', port: int = 8000, *, quiet: bool = True) -> Server:
  """A bound server (not yet serving); raises OSError when the address cannot be bound."""
  handler = type('DemoHandler', (Handler,), {'quiet': quiet})
  return Server((host, port), handler)


def address(server: Server) -> str:
  host, port = server.server_address[:2]
  host = f'[{host}]' if ':' in host else host
  return f'http://{host}:{port}/'



def start_in_thread(host: str = '127.0.0.1', port: int = 0) -> Server:
  """A server answering from a daemon thread (tests, notebooks); stop it with `stop(server)`."""
  httpd = make_server(host, port)
  threading.Thread(target=httpd.serve_forever, daemon=True, name='hinge_jax-demo').start()
  return httpd


def stop(httpd: Server) -> None:
  httpd.shutdown()
  httpd.server_close()
