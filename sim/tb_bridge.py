"""cocotb testbench that connects a simulated device's UART to a pseudo-terminal.

The top is :class:`sim.bridge_top.BridgeTop` around the device (the SoC). The testbench
opens a pseudo-terminal pair, writes the slave's path to ``config["pty_file"]`` and then,
every ``poll_cycles`` clock cycles, moves the bytes a host wrote to the slave into the
device's ``rx`` pin and the bytes from its ``tx`` pin back out to the host. A host process
opens the slave with pyserial exactly as it opens a board's serial port
(:class:`sw.transport.SimTransport` does this).

When no byte has moved for a while the testbench blocks on the pseudo-terminal (up to
``idle_sleep`` seconds) instead of simulating an idle design at full speed; simulated time
stands still meanwhile, so nothing the device does is affected. It ends when
``config["stop_file"]`` exists or the process that started it has gone.

Run through :func:`sim.runner.build_and_run`; settings arrive as its ``config``:
``pty_file``, ``stop_file`` (paths), ``depth`` (the top's FIFO depth; all three required),
``clock_ns`` (default 10), ``poll_cycles``
(default 2048), ``idle_polls`` (default 16), ``idle_sleep`` (default 0.1).
"""

import errno
import os
import select
import tty
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, Timer

from sim.runner import load_config


class Bridge:
    """The byte-level side of a :class:`~sim.bridge_top.BridgeTop`."""

    def __init__(self, dut, depth):
        self.dut = dut
        self.depth = depth
        self.frame_errors = 0

    def room(self):
        """Bytes that can be sent now without waiting (one spare for the level's lag)."""
        return max(0, self.depth - int(self.dut.i_level.value) - 1)

    async def send(self, data):
        """Hand ``data`` to the transmitter, a byte a cycle (call with room for it)."""
        dut = self.dut
        for byte in data:
            dut.i__payload.value = byte
            dut.i__valid.value = 1
            await RisingEdge(dut.clk)
        dut.i__valid.value = 0

    async def receive(self):
        """Take every byte waiting from the device."""
        dut = self.dut
        out = bytearray()
        await ReadOnly()
        if not dut.o__valid.value:
            return out
        await RisingEdge(dut.clk)
        dut.o__ready.value = 1
        while True:
            await ReadOnly()
            if not dut.o__valid.value:
                break
            out.append(int(dut.o__payload.value))
            await RisingEdge(dut.clk)
        await RisingEdge(dut.clk)
        dut.o__ready.value = 0
        return out


def _publish(path, text):
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text)
    tmp.rename(path)


@cocotb.test()
async def bridge(dut):
    """Serve the pseudo-terminal until told to stop."""
    config = load_config({})
    clock_ns = config.get("clock_ns", 10)
    poll_cycles = config.get("poll_cycles", 2048)
    idle_polls = config.get("idle_polls", 16)
    idle_sleep = config.get("idle_sleep", 0.1)
    stop_file = Path(config["stop_file"])
    parent = os.getppid()

    Clock(dut.clk, clock_ns, unit="ns").start()
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)

    bridge = Bridge(dut, config["depth"])
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    _publish(config["pty_file"], os.ttyname(slave))

    to_host = bytearray()
    quiet = 0
    try:
        while not stop_file.exists() and os.getppid() == parent:
            moved = 0
            room = bridge.room()
            if room:
                try:
                    data = os.read(master, room)
                except BlockingIOError:
                    data = b""
                except OSError as e:
                    if e.errno != errno.EIO:       # EIO: nobody has the slave open
                        raise
                    data = b""
                if data:
                    await bridge.send(data)
                    moved += len(data)
            got = await bridge.receive()
            to_host += got
            moved += len(got)
            if to_host:
                try:
                    del to_host[:os.write(master, to_host)]
                except BlockingIOError:
                    pass
            quiet = 0 if moved else quiet + 1
            if quiet > idle_polls:
                # Nothing moving: wait for the host rather than spin an idle design.
                wait = min(idle_sleep, 0.001 * 2 ** min(quiet - idle_polls, 12))
                select.select([master], [], [], wait)
            await Timer(poll_cycles * clock_ns, "ns")
            await RisingEdge(dut.clk)
    finally:
        os.close(master)
        os.close(slave)
