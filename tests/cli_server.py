"""A warm ``charrnn`` for the docs examples: one process imports charrnn and torch once, then forks
a child per command, so a page's dozens of commands do not pay the import each (~2 s apiece).

``python cli_server.py SOCKET`` serves; ``python cli_server.py SOCKET ARGS...`` is a client that
runs ``charrnn ARGS...`` in a forked child with its own working folder, environment, stdin,
stdout and stderr (passed over the Unix socket), and exits with the command's exit code. The
client imports neither, so it starts in a few milliseconds.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys


def serve(path: str) -> None:
    import charrnn.api  # noqa: F401 - everything a command may import, imported once
    import charrnn.cli
    import charrnn.viz.curves  # noqa: F401
    import charrnn.viz.page  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            server.close()
            _child(conn, json.loads(message), fds, charrnn.cli.main)
        conn.close()
        for fd in fds:
            os.close(fd)


def _child(conn: socket.socket, request: dict, fds: list[int], main) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["charrnn", *request["argv"]]
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            conn.sendall(str(code).encode())
            os._exit(code)


def client(path: str, argv: list[str]) -> int:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    conn.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    reply = conn.recv(16)
    return int(reply) if reply else 1


if __name__ == "__main__":
    if len(sys.argv) == 2:
        serve(sys.argv[1])
    else:
        sys.exit(client(sys.argv[1], sys.argv[2:]))
