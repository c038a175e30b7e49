"""`initscope explore`: serve the post as a live page on this machine and open it.

starlette and uvicorn (the optional 'explore' extra) are imported only when
the command runs. Ctrl-C stops the server cleanly: open connections get a
short grace period, runs still computing stop at their next layer (a run
stuck in one long layer is abandoned), the port is freed.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import typer

from initscope.cli.common import EXIT_INTERRUPTED, EXIT_TERMINATED, BadInput, Terminated
from initscope.explore.api import config_json
from initscope.study.config import load_config

__all__ = ["explore_command"]

DEFAULT_PORT = 8731


# long: a Typer command whose options are its signature; the body checks them, then serves until stopped
def explore_command(
    port: int = typer.Option(DEFAULT_PORT, "--port", help="TCP port (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind. Anything but loopback is reachable "
                                                          "by others, and the server has no authentication."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open a browser."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML file of config fields: the page's "
                                                                      "initial controls."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder of .csv/.npy data files the page "
                                                                     "may use (none: built-in data only)."),
    max_size: float = typer.Option(4e8, "--max-size", metavar="FLOAT",
                                   help="Largest trials × samples × width × depth (summed over initializers, "
                                        "plus the Jacobian pass) a request may ask for."),
    cache_mb: float = typer.Option(256.0, "--cache-mb", metavar="FLOAT",
                                   help="Memory (MiB) for the tables of recent runs, answered again without "
                                        "recomputing (a slider moved back, a reload, the download); 0: none."),
) -> None:
    """Serve an interactive page: every config field a control, every view redrawn as you change them."""
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise BadInput("initscope explore needs the optional 'explore' extra: pip install 'initscope[explore]'.") from None
    from initscope.explore.server import Settings, create_app

    settings = Settings(data_dir=_data_dir(data_dir), max_size=_max_size(max_size),
                        cache_bytes=_cache_bytes(cache_mb))
    if config_file is not None:
        settings.preload, settings.data_dir = _preload(config_file, settings.data_dir)
    sock = _bind(host, port)
    address, bound = sock.getsockname()[:2]
    # Judged from the address bound, not from how --host spells it (127.1, 0x7f.1, localhost.).
    loopback = _is_loopback(address)
    if loopback:
        settings.allowed_hosts = ("127.0.0.1", "localhost", "::1", host, address)
    url = f"http://{_url_host(host)}:{bound}/"
    if not loopback:
        typer.echo(f"warning: the explorer has no authentication; anyone who can reach {url} can run "
                   f"computations on this machine" + (" and read the files under --data-dir"
                                                      if settings.data_dir else "") + ".", err=True)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2))
    app.state.jobs.closing = lambda: server.should_exit
    typer.echo(f"initscope explore: serving {url} (Ctrl-C to stop)")
    sys.stdout.flush()
    if not no_browser:
        threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
    status = 0
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt as exc:  # uvicorn re-raises the signal it caught once it has shut down
        status = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    finally:
        sock.close()
    computing, abandoned = app.state.jobs.shutdown()
    notes = [f"{computing - abandoned} run(s) stopped at a layer"] if computing > abandoned else []
    notes += [f"{abandoned} run(s) abandoned"] if abandoned else []
    typer.echo("initscope explore: stopped" + (f" ({', '.join(notes)})" if notes else ""))
    if abandoned:
        # Their threads cannot be interrupted and the interpreter would wait for them at exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    if status:
        raise typer.Exit(EXIT_INTERRUPTED)  # run_app says so, and makes it 143 after SIGTERM


def _data_dir(path: Path | None) -> Path | None:
    if path is None:
        return None
    if not path.is_dir():
        raise BadInput(f"The 'data_dir' parameter must be an existing folder. Got {str(path)!r} instead.")
    return path.resolve()


def _max_size(value: float) -> float:
    if not value > 0 or value != value or value == float("inf"):
        raise BadInput(f"The 'max_size' parameter must be a finite number > 0. Got {value!r} instead.")
    return value


def _cache_bytes(mib: float) -> int:
    if not mib >= 0 or mib == float("inf"):
        raise BadInput(f"The 'cache_mb' parameter must be a finite number >= 0. Got {mib!r} instead.")
    return int(mib * 2**20)


def _preload(path: Path, data_dir: Path | None):
    """The config file's fields for the page; a data file in it must lie under --data-dir
    (its own folder becomes the data folder when none was given)."""
    try:
        config = load_config(path)
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    fields = config_json(config)
    if config.data_is_file:
        file = Path(config.data).resolve()
        if data_dir is None:
            data_dir = file.parent
        if not file.is_relative_to(data_dir):
            raise BadInput(f"The 'data' parameter of {str(path)!r} must be a file under --data-dir "
                           f"{str(data_dir)!r}. Got {config.data!r} instead.")
        fields["data"] = str(file.relative_to(data_dir))
    return fields, data_dir


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so that a taken port is one clear line (exit 2)."""
    if not 0 <= port <= 65535:
        raise BadInput(f"The 'port' parameter must be an integer in [0, 65535]. Got {port!r} instead.")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BadInput(f"The 'host' parameter must be an address of this machine. Got {host!r} ({exc}).") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise BadInput(f"The 'port' parameter must be a free port on {host}. Got {port} ({exc.strerror}).") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _open_when_started(server, url: str) -> None:
    import webbrowser

    for _ in range(200):
        if server.started:
            webbrowser.open(url)
            return
        time.sleep(0.05)
