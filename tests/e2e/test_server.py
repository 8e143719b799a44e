"""How ``streamlit run app.py`` serves by default: on loopback only, with no look-up of an outside address."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.browser import streamlit_server

LISTEN = "0A"  # the TCP state of a listening socket in /proc/net/tcp


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp and tcp6 write them) that listen on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == LISTEN and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_the_app_listens_on_loopback_only_and_looks_nothing_up(tmp_path):
    log = tmp_path / "server.log"
    with streamlit_server(log, address=None) as url:  # the address from the app's own config
        port = int(url.rsplit(":", 1)[1])
        addresses = listening_addresses(port)
        printed = log.read_text()
    assert addresses == {"0100007F"}, f"listening on {addresses} (0100007F is 127.0.0.1)"
    assert f"URL: http://127.0.0.1:{port}" in printed
    # a wildcard address would print the machine's network address, and look up its outside one
    assert "Network URL" not in printed and "External URL" not in printed
