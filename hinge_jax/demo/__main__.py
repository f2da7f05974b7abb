"""`python -m hinge_jax.demo [--port=8000] [--host=127.0.0.1]`: serves the interactive demo.

Prints the page's address and serves until Ctrl-C. Local by default (127.0.0.1); a port in
use, or a host that cannot be bound, is one `error:` line (exit 2).
"""

import errno
import sys
import threading

from absl import flags

from hinge_jax import cli_utils
from hinge_jax.demo import api, server
from hinge_jax.errors import UserError


def bind(host: str, port: int, *, quiet: bool = True) -> server.Server:
  """The bound server; an address that cannot be bound is a UserError naming the fix."""
  if not 0 <= port <= 65535:
    raise UserError(f'--port={port} is not a port; give one in 1..65535 (0: any free port)')
  try:
    return server.make_server(host, port, quiet=quiet)
  except OSError as e:
    if e.errno == errno.EADDRINUSE:
      raise UserError(f'port {port} on {host} is in use (another demo?); choose another with '
                      f'--port={port + 1 if port < 65535 else 8001}, or --port=0 for any free '
                      f'one') from None
    if e.errno == errno.EACCES:
      raise UserError(f'no permission to bind port {port} on {host}; use a port above 1023, '
                      f'e.g. --port=8000') from None
    reason = e.strerror or str(e)
    raise UserError(f'cannot serve on {host}:{port} ({reason}); give a local address, e.g. '
                    f'--host=127.0.0.1') from None


def serve(httpd: server.Server) -> None:
  """Serves until Ctrl-C, compiling the other losses in the background meanwhile. The
  warm-up is stopped and joined before returning: a process that exits in the middle of an
  XLA compile aborts."""
  stop = threading.Event()
  warm = threading.Thread(target=api.warm_up_rest, args=(stop,), daemon=True, name='warm-up')
  warm.start()
  try:
    httpd.serve_forever()
  except KeyboardInterrupt:
    print('stopped', file=sys.stderr)
  finally:
    stop.set()
    warm.join()  # at most one compile
    httpd.server_close()


def main(argv):
  del argv  # cli_utils.parse_flags refuses positional arguments
  fl = flags.FLAGS
  httpd = bind(fl.host, fl.port, quiet=not fl.verbose)
  api.warm_up()  # compile the default loss's step before the page asks for it
  print(f'hinge_jax demo: {server.address(httpd)} (Ctrl-C stops it)', flush=True)
  serve(httpd)


def run() -> None:
  """Defines the flags and serves; bad input is one `error:` line, exit 2."""
  flags.DEFINE_integer('port', 8000, 'Port to serve on (0: any free port).')
  flags.DEFINE_string('host', '127.0.0.1', 'Address to bind (0.0.0.0 opens the demo to the '
                      'network).')
  flags.DEFINE_bool('verbose', False, 'Log every request on stderr.')
  cli_utils.run(main)


if __name__ == '__main__':
  run()
