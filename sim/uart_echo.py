"""UART echo top: every byte received on ``rx`` is sent back on ``tx``.

A pin-level test fixture for the cocotb harness (:mod:`sim.runner`, :mod:`sim.tb_uart`): it
has only the two serial pins (plus ``clk``/``rst``), like the real SoC's UART, so the same
pin-level drivers will later talk to whole-SoC tops.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.uart import UARTRx, UARTTx


__all__ = ["UARTEcho"]


class UARTEcho(wiring.Component):
    """Loopback of :class:`hw.uart.UARTRx` into :class:`hw.uart.UARTTx`.

    Bytes with a framing error never reach the receiver's stream, so they are not echoed.
    The receiver's error flags stay internal; a testbench reaches them through the hierarchy
    (``dut.uart_rx.err__frame``).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, shared by both directions; see :func:`hw.uart.check_parameters`.

    Attributes
    ----------
    rx : In(1)
        Serial input; high when idle.
    tx : Out(1)
        Serial output; high when idle.
    """
    rx: In(1, init=1)
    tx: Out(1, init=1)

    def __init__(self, divisor):
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self):
        """Clock cycles per bit."""
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = uart_rx = UARTRx(self._divisor)
        m.submodules.uart_tx = uart_tx = UARTTx(self._divisor)

        wiring.connect(m, uart_rx.o, uart_tx.i)
        m.d.comb += [
            uart_rx.rx.eq(self.rx),
            self.tx.eq(uart_tx.tx),
        ]
        return m
