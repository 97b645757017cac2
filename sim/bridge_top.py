"""Sim-only top that lets a testbench move whole bytes through a device's UART pins.

The device (the SoC, or :class:`sim.uart_echo.UARTEcho`) keeps its own serial pins; beside
it sit a host-side transmitter and receiver (:mod:`hw.uart`) with FIFOs, so the testbench
(:mod:`sim.tb_bridge`) hands over and takes bytes with a handshake instead of timing every
bit from Python, which would be far slower than the simulated logic.
"""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.uart import UARTRx, UARTTx

__all__ = ["BridgeTop"]


class BridgeTop(wiring.Component):
    """A device with ``rx``/``tx`` pins, and a byte-level UART port to them.

    Parameters
    ----------
    device : wiring.Component
        Has ``rx: In(1)`` and ``tx: Out(1)`` (8N1, ``divisor`` cycles per bit).
    divisor : int
        Clock cycles per bit of the device's UART.
    depth : int
        Bytes each FIFO holds. The receive FIFO must hold what the device sends between two
        polls of the testbench: a UART line cannot be held off.

    Attributes
    ----------
    i : In(stream.Signature(8))
        Bytes to send to the device's ``rx`` pin.
    o : Out(stream.Signature(8))
        Bytes received from the device's ``tx`` pin.
    i_level : Out(range(depth + 1))
        Bytes waiting in the FIFO before the transmitter (the testbench sends at most
        ``depth - i_level`` bytes at once, so it never waits on ``i.ready``).
    frame_errors : Out(1)
        Pulses for each framing error the host-side receiver sees on ``tx``.
    """

    def __init__(self, device, divisor, depth=1024):
        self._device = device
        self._divisor = divisor
        self._depth = depth
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
            "i_level": Out(range(depth + 1)),
            "frame_errors": Out(1),
        })

    @property
    def depth(self):
        """Bytes each FIFO holds."""
        return self._depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.device = device = self._device
        m.submodules.host_tx = host_tx = UARTTx(self._divisor)
        m.submodules.host_rx = host_rx = UARTRx(self._divisor)
        m.submodules.to_device = to_device = SyncFIFOBuffered(width=8, depth=self._depth)
        m.submodules.from_device = from_device = SyncFIFOBuffered(width=8, depth=self._depth)

        wiring.connect(m, wiring.flipped(self.i), to_device.w_stream)
        wiring.connect(m, to_device.r_stream, host_tx.i)
        wiring.connect(m, host_rx.o, from_device.w_stream)
        wiring.connect(m, from_device.r_stream, wiring.flipped(self.o))
        m.d.comb += [
            device.rx.eq(host_tx.tx),
            host_rx.rx.eq(device.tx),
            self.frame_errors.eq(host_rx.err.frame),
            self.i_level.eq(to_device.level),
        ]
        return m
