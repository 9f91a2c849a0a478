"""cocotb bench behind ``shiftnpu sim-serve``: the design's link, bridged to a TCP socket.

The bench listens on 127.0.0.1 (port from the parameters, 0 = any free one, written to
``port_file``), accepts one client at a time and moves bytes both ways between the socket and the
design's link ports: the byte streams (mode ``bytes``, fast) or the serial pins through the real
UARTs (mode ``uart``). While nothing happens it lets the clock run freely in chunks, so a job the
host started keeps running. It stops when ``stop_file`` appears.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections import deque

import cocotb
from link_port import BytePort, UARTPort, start_clock


def _listen(port: int, port_file: str | None) -> socket.socket:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    srv.setblocking(False)
    if port_file:
        tmp = port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(srv.getsockname()[1]))
        os.replace(tmp, port_file)
    return srv


#: The shortest idle stretch, in clocks.
IDLE_MIN = 64


@cocotb.test()
async def serve(dut):
    p = json.loads(os.environ["SHIFTNPU_PARAMS"])
    mode = p.get("mode", "bytes")
    chunk = int(p.get("chunk", 2000))
    stop_file = p.get("stop_file")
    await start_clock(dut)
    port = BytePort(dut) if mode == "bytes" else UARTPort(dut, int(p["divisor"]))
    srv = _listen(int(p.get("port", 0)), p.get("port_file"))
    dut._log.info(f"sim-serve: listening on 127.0.0.1:{srv.getsockname()[1]} ({mode})")
    client: socket.socket | None = None
    pending: deque[int] = deque()
    quiet = 0  # clocks since the device last had something to say
    next_stop_check = 0.0
    # Idle stretches start short and double up to ``chunk`` clocks, so a request that arrives while
    # the host waits for a job (polling the status) is answered within a few hundred clocks; the
    # socket is checked without sleeping between them while the host was active in the last second.
    idle_clocks = IDLE_MIN
    last_data = 0.0

    def poll(timeout: float) -> None:
        nonlocal client, last_data, idle_clocks
        r, _, _ = select.select([client or srv], [], [], timeout)
        if not r:
            return
        if client is None:
            client, _ = srv.accept()
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return
        try:
            data = client.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the host went away; the next one starts with a clean queue
            client.close()
            client = None
            pending.clear()
            return
        pending.extend(data)
        last_data, idle_clocks = time.monotonic(), IDLE_MIN

    def idle_wait() -> float:
        """How long to wait for the socket before idling: not at all while a host is at work."""
        return 0.0 if client is not None and time.monotonic() - last_data < 1.0 else 0.002

    def flush() -> None:
        nonlocal client
        data = port.take()
        if data and client is not None:
            try:
                client.setblocking(True)
                client.sendall(data)
                client.setblocking(False)
            except OSError:
                client.close()
                client = None

    while True:
        now = time.monotonic()
        if now >= next_stop_check:
            if stop_file and os.path.exists(stop_file):
                break
            next_stop_check = now + 0.2
        if mode == "bytes":
            if pending or quiet < 64:
                # Active: one clock at a time while bytes move, checking the socket now and then for
                # more input; while the device works on a request, run the clock until it answers.
                for _ in range(256):
                    if not pending and not port.tx_pending:
                        if not await port.wait_tx(64 - quiet):
                            quiet = 64
                            break
                        quiet = 0
                    await port.step(pending)
                    quiet = 0 if (pending or port.tx_pending) else quiet + 1
                    if not pending and quiet >= 64:
                        break
                flush()
                poll(0)
            else:
                poll(idle_wait())
                if not pending:
                    await port.idle(idle_clocks)
                    idle_clocks = min(2 * idle_clocks, chunk)
                    if port.tx_pending:
                        quiet = 0
        else:
            if pending:
                while pending:
                    await port.send(pending.popleft())
                    if len(port.out) >= 16:
                        flush()
                flush()
                poll(0)
            else:
                poll(idle_wait())
                if not pending:
                    await port.idle(idle_clocks)
                    idle_clocks = min(2 * idle_clocks, chunk)
                    flush()
    if client is not None:
        client.close()
    srv.close()
