"""Making TFF's `worker_binary` listen on one address instead of all.

TFF 0.87's worker binary binds `[::]:PORT` (every interface, IPv4 and IPv6)
and has no flag to choose the address; its gRPC service has no TLS and no
authentication. Options examined on this project's Linux machines:

* A flag of the binary, or a Python executor service in TFF 0.87 that could
  be served on a chosen address: none exist (the wheel has no Python
  executor bindings; `../shared/reference/tff_0.87_probes.md` section 5).
* An unprivileged user + network namespace (`unshare -rn`) holding the worker
  with a relay on the host's loopback: possible, but every byte of every
  round would pass through a Python relay.
* An `LD_PRELOAD` shim around libc's `bind()` (chosen). The binary is
  dynamically linked and imports `bind@GLIBC_2.2.5`, so a tiny shared library
  loaded first can rewrite a wildcard bind (`0.0.0.0` or `::`) to the
  address named in `TFF_DITTO_BIND_ADDRESS` (IPv4; on an IPv6 socket as the
  IPv4-mapped `::ffff:a.b.c.d`, which accepts only IPv4 connections to that
  address). No root is needed and traffic is not touched. The shim is
  compiled on first use with the system C compiler (`cc`, from gcc) into a
  per-user cache; where there is no compiler, `build_bind_shim` raises
  `BindShimUnavailable` and callers decide (the owned local worker falls
  back to all interfaces with a warning; `scripts/start_local_workers.py`
  refuses to start).

`listening_addresses(pid)` reads `/proc/<pid>/fd` and `/proc/net/tcp{,6}`
to report where a process really listens, so tests and scripts can check the
result instead of trusting it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
import tempfile

BIND_ADDRESS_VARIABLE = 'TFF_DITTO_BIND_ADDRESS'

_SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_function)(int, const struct sockaddr *, socklen_t);

/* Rewrites binds to 0.0.0.0 / :: into binds to $TFF_DITTO_BIND_ADDRESS. */
int bind(int fd, const struct sockaddr *address, socklen_t length) {
  static bind_function real_bind = NULL;
  if (real_bind == NULL) {
    real_bind = (bind_function)dlsym(RTLD_NEXT, "bind");
    if (real_bind == NULL) {
      errno = ENOSYS;
      return -1;
    }
  }
  const char *target = getenv("TFF_DITTO_BIND_ADDRESS");
  struct in_addr target_v4;
  if (target == NULL || address == NULL ||
      inet_pton(AF_INET, target, &target_v4) != 1) {
    return real_bind(fd, address, length);
  }
  if (address->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
    struct sockaddr_in copy;
    memcpy(&copy, address, sizeof(copy));
    if (copy.sin_addr.s_addr == htonl(INADDR_ANY)) {
      copy.sin_addr = target_v4;
      return real_bind(fd, (const struct sockaddr *)&copy, sizeof(copy));
    }
  } else if (address->sa_family == AF_INET6 &&
             length >= sizeof(struct sockaddr_in6)) {
    struct sockaddr_in6 copy;
    memcpy(&copy, address, sizeof(copy));
    if (IN6_IS_ADDR_UNSPECIFIED(&copy.sin6_addr)) {
      memset(&copy.sin6_addr, 0, sizeof(copy.sin6_addr));
      copy.sin6_addr.s6_addr[10] = 0xff;
      copy.sin6_addr.s6_addr[11] = 0xff;
      memcpy(&copy.sin6_addr.s6_addr[12], &target_v4, 4);
      return real_bind(fd, (const struct sockaddr *)&copy, sizeof(copy));
    }
  }
  return real_bind(fd, address, length);
}
"""


class BindShimUnavailable(RuntimeError):
  """The bind() shim cannot be built here (no C compiler, or it failed)."""


def _cache_directory() -> str:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache'
  )
  return os.path.join(base, 'tff_ditto')


def build_bind_shim(cache_directory: str | None = None) -> str:
  """Compiles the bind() shim once (cached by source hash); returns its path.

  The compiler is `$CC` if set, else `cc` or `gcc` from PATH.

  Args:
    cache_directory: Where to keep the library (default
      `~/.cache/tff_ditto`, or under `$XDG_CACHE_HOME`).

  Returns:
    Path of the shared library to put in `LD_PRELOAD`.

  Raises:
    BindShimUnavailable: No C compiler, or the compilation failed.
  """
  directory = cache_directory or _cache_directory()
  digest = hashlib.sha256(_SHIM_SOURCE.encode()).hexdigest()[:16]
  library = os.path.join(directory, f'bind_shim_{digest}.so')
  if os.path.isfile(library):
    return library
  if os.environ.get('CC'):
    compiler = shutil.which(os.environ['CC'])
  else:
    compiler = shutil.which('cc') or shutil.which('gcc')
  if compiler is None:
    raise BindShimUnavailable(
        'no C compiler (cc/gcc) to build the bind() shim that keeps the TFF '
        'worker off non-loopback interfaces.'
    )
  os.makedirs(directory, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=directory) as scratch:
    source = os.path.join(scratch, 'bind_shim.c')
    with open(source, 'w') as file:
      file.write(_SHIM_SOURCE)
    output = os.path.join(scratch, 'bind_shim.so')
    result = subprocess.run(
        [compiler, '-shared', '-fPIC', '-O2', '-o', output, source, '-ldl'],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
      raise BindShimUnavailable(
          f'compiling the bind() shim failed: {result.stderr.strip()}'
      )
    os.replace(output, library)  # Atomic: concurrent builders are harmless.
  return library


def check_bind_address(address: str) -> str:
  """Validates an IPv4 bind address; returns it normalized.

  Raises:
    ValueError: Not an IPv4 address.
  """
  try:
    return str(ipaddress.IPv4Address(address))
  except ValueError:
    raise ValueError(
        'bind address must be an IPv4 address such as 127.0.0.1, got '
        f'{address!r}.'
    ) from None


def bind_environment(address: str, cache_directory: str | None = None) -> dict:
  """Environment variables that make a worker bind `address` instead of `*`.

  Args:
    address: IPv4 address, e.g. '127.0.0.1'. '0.0.0.0' means all interfaces
      and needs no shim (an empty dict is returned).
    cache_directory: See `build_bind_shim`.

  Returns:
    Variables to add to the worker's environment.

  Raises:
    ValueError: `address` is not IPv4.
    BindShimUnavailable: The shim cannot be built.
  """
  address = check_bind_address(address)
  if address == '0.0.0.0':
    return {}
  library = build_bind_shim(cache_directory)
  preload = os.environ.get('LD_PRELOAD', '')
  return {
      'LD_PRELOAD': f'{library} {preload}'.strip(),
      BIND_ADDRESS_VARIABLE: address,
  }


def _socket_inodes(pid: int) -> set[str]:
  inodes = set()
  fd_directory = f'/proc/{pid}/fd'
  for name in os.listdir(fd_directory):
    try:
      target = os.readlink(os.path.join(fd_directory, name))
    except OSError:
      continue
    if target.startswith('socket:['):
      inodes.add(target[len('socket:[') : -1])
  return inodes


def _decode_address(hex_address: str) -> str:
  """/proc/net/tcp{,6} address (little-endian 32-bit words) -> text."""
  raw = bytes.fromhex(hex_address)
  words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
  return str(ipaddress.ip_address(b''.join(words)))


_TCP_LISTEN = '0A'


def listening_addresses(pid: int) -> list[tuple[str, int]]:
  """(address, port) of every TCP socket that process `pid` listens on.

  Read from `/proc/<pid>/fd` and `/proc/net/tcp`, `/proc/net/tcp6` (Linux),
  so it reports what the kernel has, not what the program asked for.
  IPv4-mapped IPv6 addresses are shown as such (`::ffff:127.0.0.1`).
  """
  inodes = _socket_inodes(pid)
  found = []
  for table in ('/proc/net/tcp', '/proc/net/tcp6'):
    if not os.path.exists(table):
      continue
    with open(table) as file:
      next(file)
      for line in file:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state != _TCP_LISTEN or inode not in inodes:
          continue
        hex_address, hex_port = local.split(':')
        found.append((_decode_address(hex_address), int(hex_port, 16)))
  return found


def is_loopback(address: str) -> bool:
  """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses."""
  parsed = ipaddress.ip_address(address)
  if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
    parsed = parsed.ipv4_mapped
  return parsed.is_loopback


def wait_until_listening(process, port: int, timeout_seconds: float = 60.0):
  """Waits until `process` (a `subprocess.Popen`) listens on TCP `port`.

  Returns:
    Its listening sockets, as `listening_addresses` gives them.

  Raises:
    RuntimeError: The process exited or did not listen in time.
  """
  import time  # pylint: disable=g-import-not-at-top

  deadline = time.monotonic() + timeout_seconds
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise RuntimeError(
          f'worker on port {port} exited ({process.returncode}).'
      )
    sockets = listening_addresses(process.pid)
    if any(found_port == port for _, found_port in sockets):
      return sockets
    time.sleep(0.1)
  raise RuntimeError(f'worker on port {port} did not listen in time.')
