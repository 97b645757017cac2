"""8N1 UART transmitter and receiver with stream interfaces.

Both blocks run from the ``sync`` domain and take a fixed clock divisor (clock cycles per bit),
for example ``divisor = round(clk_freq / baud_rate)``. Every counter is a down-counter that
stops one step below zero, so "time is up" is the counter's sign bit rather than a wide
comparison: that keeps the paths short enough for 100+ MHz on ECP5.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out


__all__ = ["FRAME_BITS", "check_parameters", "UARTRxError", "UARTTx", "UARTRx"]


#: Bits on the line per frame: start, 8 data bits (LSB first), stop.
FRAME_BITS = 10


def check_parameters(*, divisor):
    """Validate the UART parameters.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit.

    Raises
    ------
    ValueError
        If ``divisor`` is not an integer, or is less than 4. Below 4 cycles per bit the receiver
        cannot place a sample in the middle of a bit and still find the next start bit.
    """
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        raise ValueError(f"UART divisor must be an integer, not {divisor!r}")
    if divisor < 4:
        raise ValueError(f"UART divisor must be at least 4 clock cycles per bit, not {divisor}")


def _bit_timer(divisor):
    # Counts divisor-2 .. 0, -1: its sign bit rises exactly `divisor` cycles after a reload.
    return Signal(range(-1, divisor - 1), init=-1, name="timer")


class UARTRxError(data.Struct):
    """Receiver error flags; each one is high for a single cycle per event.

    Attributes
    ----------
    frame : 1
        The stop bit was 0. The byte is discarded and the receiver waits for the line to go
        high before it looks for another start bit.
    overflow : 1
        A good byte completed while the previous byte was still waiting on ``o``. The new byte
        is discarded; the waiting byte is kept, as the stream contract requires.
    """
    frame: 1
    overflow: 1


class UARTTx(wiring.Component):
    """8N1 UART transmitter.

    Frames are sent back to back: a byte offered on ``i`` while the previous stop bit is in its
    last cycle starts its start bit on the next cycle, with no idle gap.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit; see :func:`check_parameters`.

    Attributes
    ----------
    i : In(stream.Signature(8))
        Bytes to send. ``i.ready`` is high while the transmitter is idle and in the last cycle
        of a stop bit.
    tx : Out(1)
        Serial output, registered; high when idle.
    """
    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor):
        check_parameters(divisor=divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self):
        """Clock cycles per bit."""
        return self._divisor

    def elaborate(self, platform):
        m = Module()

        busy = Signal()
        timer = _bit_timer(self._divisor)
        # Data bits followed by the stop bit; the start bit is driven on acceptance.
        shreg = Signal(9)
        bits_left = Signal(range(FRAME_BITS))
        bit_done = timer[-1]

        m.d.comb += self.i.ready.eq(~busy | (bit_done & (bits_left == 0)))

        with m.If(~bit_done):
            m.d.sync += timer.eq(timer - 1)

        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                self.tx.eq(0),
                shreg.eq(Cat(self.i.payload, C(1, 1))),
                bits_left.eq(FRAME_BITS - 1),
                timer.eq(self._divisor - 2),
                busy.eq(1),
            ]
        with m.Elif(busy & bit_done):
            m.d.sync += timer.eq(self._divisor - 2)
            with m.If(bits_left != 0):
                m.d.sync += [
                    self.tx.eq(shreg[0]),
                    shreg.eq(shreg >> 1),
                    bits_left.eq(bits_left - 1),
                ]
            with m.Else():
                # The stop bit has now lasted a whole bit time.
                m.d.sync += busy.eq(0)

        return m


class UARTRx(wiring.Component):
    """8N1 UART receiver.

    The line is synchronised through two flip-flops. The receiver re-synchronises on the
    falling edge of each start bit and samples every bit in its middle, so it tolerates a
    baud-rate mismatch of a few percent. A start bit that is no longer low at its middle is a
    glitch and is ignored. The stop bit is sampled in its middle and the receiver is then
    ready for the next start bit, so frames may arrive back to back.

    A break (the line low for longer than a whole frame) looks like a frame with a 0 stop
    bit: it pulses ``err.frame`` once, emits no byte, raises ``brk`` until the line returns
    high, and the receiver then waits for the next start bit as usual.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit; see :func:`check_parameters`.

    Attributes
    ----------
    rx : In(1)
        Serial input, asynchronous; high when idle.
    o : Out(stream.Signature(8))
        Received bytes. A byte stays valid until taken; see ``err.overflow``.
    err : Out(UARTRxError)
        Error flags, each pulsed for one cycle.
    brk : Out(1)
        High while the (synchronised) line has been low for more than ``10 * divisor``
        cycles; falls one cycle after the line is seen high again.
    """
    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    err: Out(UARTRxError)
    brk: Out(1)

    def __init__(self, divisor):
        check_parameters(divisor=divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self):
        """Clock cycles per bit."""
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor

        rx = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.rx, rx, init=1, stages=2)

        # Break detector: sign bit rises after more than a whole frame of low line.
        frame_cycles = FRAME_BITS * divisor
        low_timer = Signal(range(-1, frame_cycles + 1), init=frame_cycles)
        with m.If(rx):
            m.d.sync += low_timer.eq(frame_cycles)
        with m.Elif(~low_timer[-1]):
            m.d.sync += low_timer.eq(low_timer - 1)
        m.d.comb += self.brk.eq(low_timer[-1])

        timer = _bit_timer(divisor)
        bit_done = timer[-1]
        shreg = Signal(8)
        bits_left = Signal(range(8))

        with m.If(~bit_done):
            m.d.sync += timer.eq(timer - 1)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += self.err.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # First low cycle seen: the middle of the start bit is divisor//2 away.
                    m.d.sync += timer.eq(divisor // 2 - 2)
                    m.next = "START"

            with m.State("START"):
                with m.If(bit_done):
                    with m.If(rx):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [
                            timer.eq(divisor - 2),
                            bits_left.eq(7),
                        ]
                        m.next = "DATA"

            with m.State("DATA"):
                with m.If(bit_done):
                    m.d.sync += [
                        shreg.eq(Cat(shreg[1:], rx)),
                        timer.eq(divisor - 2),
                        bits_left.eq(bits_left - 1),
                    ]
                    with m.If(bits_left == 0):
                        m.next = "STOP"

            with m.State("STOP"):
                with m.If(bit_done):
                    with m.If(rx):
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.err.overflow.eq(1)
                        with m.Else():
                            m.d.sync += [
                                self.o.payload.eq(shreg),
                                self.o.valid.eq(1),
                            ]
                        # Half a bit early: ready to catch a back-to-back start bit.
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.err.frame.eq(1)
                        m.next = "WAIT_HIGH"

            with m.State("WAIT_HIGH"):
                # After a bad stop bit (or a break) the line may still be low: a low line here
                # is not a new start bit.
                with m.If(rx):
                    m.next = "IDLE"

        return m
