"""The SoC: UART, link and core behind two serial pins and eight LEDs.

No platform or pin code lives here: a board top (``boards/``) instantiates :class:`SoC`,
feeds it a clock of ``clock_hz`` and wires ``rx``, ``tx`` and ``leds`` to its pins.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .core import Broadcast, Core
from .link import Link
from .streams import StreamRegister
from .uart import UARTRx, UARTTx, check_parameters

__all__ = ["SoC", "LED"]


class LED:
    """What each bit of :attr:`SoC.leds` shows."""
    HEARTBEAT = 0      # blinks at about 1 Hz: the clock runs and the design is loaded
    RX = 1             # a byte arrived (stretched to about 50 ms)
    TX = 2             # a byte was sent (stretched)
    BUSY = 3           # the link is working on a request
    CORE_BUSY = 4      # the core is running a command
    FRAME_ERROR = 5    # the last request was NACKed or refused (until one is answered OK)
    CORE_ERROR = 6     # a sticky error flag of the core is set (a fault: the link clears those it causes)
    IMAGE = 7          # the image tag is not 0


class SoC(wiring.Component):
    """UART <-> :class:`~hw.link.Link` <-> :class:`~hw.core.Core`, speaking spikestream/protocol.py.

    Parameters
    ----------
    config : CoreConfig
        The core to build.
    clock_hz : int
        The clock the board feeds in; with ``baud`` it sets the UART divisor
        (``clock_hz // baud`` cycles per bit, at least 4) and IDENTIFY reports both.
    baud : int
        The serial line's rate.
    init : iterable of :class:`~spikestream.memory_map.Write`, optional
        An image preloaded into the core's memories (see :class:`hw.core.Core`).
    tag : int
        The image tag IDENTIFY reports at power-up: with ``init``, the tag of that image, so
        that a host sees it as loaded.
    lutram : collection of str, optional
        The lane memories the build puts in LUT RAM (see :class:`hw.core.Core`).

    Attributes
    ----------
    rx : In(1)
        Serial input (idle high).
    tx : Out(1)
        Serial output (idle high).
    leds : Out(8)
        Status lights; bit meanings in :class:`LED`.
    """
    rx: In(1, init=1)
    tx: Out(1, init=1)
    leds: Out(8)

    def __init__(self, config, *, clock_hz, baud, init=None, tag=0, lutram=None):
        self._config = config
        self._lutram = lutram
        self._clock_hz = int(clock_hz)
        self._baud = int(baud)
        self._divisor = self._clock_hz // self._baud
        check_parameters(divisor=self._divisor)
        self._init = list(init) if init is not None else None
        self._tag = tag
        super().__init__()

    @property
    def config(self):
        return self._config

    @property
    def divisor(self):
        """UART clock cycles per bit."""
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = uart_rx = UARTRx(self._divisor)
        m.submodules.uart_tx = uart_tx = UARTTx(self._divisor)
        m.submodules.tx_buffer = tx_buffer = StreamRegister(8)
        link = Link(self._config, clock_hz=self._clock_hz, baud=self._baud, tag=self._tag)
        core = Core(self._config, init=self._init, lutram=self._lutram)
        # The link and the core each take the reset from a register of their own, a cycle
        # after the rest of the SoC, in a clock domain of their own on the same clock: one
        # reset net across the die, in the logic of both state machines, was the 85F build's
        # critical path. (hw.build keeps the two registers apart; the UART sends the link
        # nothing until a byte has arrived, long after both have left the reset.)
        m.submodules.reset_tree = resets = Broadcast(1, 2, 1, control=lambda r: ())
        m.d.comb += resets.i.eq(ResetSignal("sync"))
        for k, (name, block) in enumerate((("link", link), ("core", core))):
            domain = ClockDomain(name, local=True)
            m.domains += domain
            m.d.comb += [domain.clk.eq(ClockSignal("sync")), domain.rst.eq(resets.o[k])]
            m.submodules[name] = DomainRenamer(name)(block)

        m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx),
                     link.rx_error.eq(uart_rx.err.frame | uart_rx.err.overflow),
                     link.core_status.eq(core.status)]
        wiring.connect(m, uart_rx.o, link.rx)
        # The link's line bytes go to the transmitter through a register (the two handshakes
        # would otherwise make one path from the transmitter's counters to the encoder's
        # and back to the transmitter's timer).
        wiring.connect(m, link.tx, tx_buffer.i)
        wiring.connect(m, tx_buffer.o, uart_tx.i)
        wiring.connect(m, link.write, core.write)
        wiring.connect(m, link.read, core.read)
        wiring.connect(m, core.read_data, link.read_data)
        wiring.connect(m, link.cmd, core.cmd)
        wiring.connect(m, core.result, link.result)

        # LEDs -------------------------------------------------------------------------------
        def stretch(event, name):
            # A down-counter whose sign bit is "off": lit for clock_hz / 20 cycles.
            n = max(1, self._clock_hz // 20)
            t = Signal(range(-1, n), init=-1, name=name)
            with m.If(event):
                m.d.sync += t.eq(n - 1)
            with m.Elif(~t[-1]):
                m.d.sync += t.eq(t - 1)
            return ~t[-1]

        half = max(1, self._clock_hz // 2)
        beat_timer = Signal(range(-1, half), init=half - 1, name="beat_timer")
        beat = Signal(name="beat")
        with m.If(beat_timer[-1]):
            m.d.sync += [beat_timer.eq(half - 2), beat.eq(~beat)]
        with m.Else():
            m.d.sync += beat_timer.eq(beat_timer - 1)

        frame_error = Signal(name="frame_error_seen")
        with m.If(link.answered):
            m.d.sync += frame_error.eq(link.rejected)

        status = core.status
        leds = Signal(8, name="leds_r")
        m.d.sync += [
            leds[LED.HEARTBEAT].eq(beat),
            leds[LED.RX].eq(stretch(uart_rx.o.valid & uart_rx.o.ready, "rx_led")),
            leds[LED.TX].eq(stretch(uart_tx.i.valid & uart_tx.i.ready, "tx_led")),
            leds[LED.BUSY].eq(link.busy),
            leds[LED.CORE_BUSY].eq(status.busy),
            leds[LED.FRAME_ERROR].eq(frame_error),
            leds[LED.CORE_ERROR].eq(status.write_error | status.read_error | status.cmd_error),
            leds[LED.IMAGE].eq(link.tag != 0),
        ]
        m.d.comb += self.leds.eq(leds)
        return m
