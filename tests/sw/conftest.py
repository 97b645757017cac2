"""Shared fixtures of the host tests: small networks, boards and a lossy transport."""

import numpy as np
import pytest

from spikestream.memory_map import CoreConfig
from spikestream.formats import DECAY_ONE, NeuronKind
from spikestream.image import Image, load_image
from spikestream.network import INPUT, Network, Projection, make_population
from spikestream.board import SHIPPED_IMAGE
from sw.board import board_config
from sw.transport import GoldenTransport, Transport


def small_network(seed=0, vocab=6, hidden=(7, 5)):
    """A random network with two ALIF/LIF layers, token shift and recurrence."""
    rng = np.random.default_rng(seed)
    kinds = [NeuronKind.ALIF, NeuronKind.LIF]
    pops = [make_population(f"h{i}", kinds[i % 2], n, alpha=rng.integers(150, DECAY_ONE + 1, n),
                            theta=rng.integers(20, 200, n), rho=rng.integers(0, DECAY_ONE + 1, n),
                            jump=rng.integers(0, 50, n), bias=rng.integers(-10, 40, n))
            for i, n in enumerate(hidden)]
    pops.append(make_population("readout", NeuronKind.READOUT, vocab,
                                alpha=rng.integers(100, DECAY_ONE + 1, vocab),
                                bias=rng.integers(-30, 30, vocab)))
    size = lambda s: vocab if s == INPUT else pops[s].size
    wiring = [(INPUT, 0, 0), (INPUT, 0, 1), (0, 0, 1), (0, 1, 0), (1, 2, 1), (0, 2, 0),
              (INPUT, 2, 0)]
    projs = []
    for src, dst, delay in sorted(wiring, key=lambda w: w[1]):
        shape = (size(src), pops[dst].size)
        w = rng.integers(-60, 100, shape) * (rng.random(shape) < 0.6)
        projs.append(Projection(src, dst, delay, w.astype(np.int64)))
    return Network(vocab=[chr(97 + k) for k in range(vocab)], populations=pops,
                   projections=projs, readout=len(pops) - 1).check()


@pytest.fixture(scope="session")
def small_image():
    return Image(net=small_network(), lanes=4)


@pytest.fixture(scope="session")
def small_config(small_image):
    return CoreConfig.for_image(small_image)


@pytest.fixture(scope="session")
def shipped_image():
    return load_image(SHIPPED_IMAGE)


@pytest.fixture(scope="session")
def shipped_config():
    return board_config()


class LossyTransport(Transport):
    """Wraps a transport and damages chosen traffic, to test recovery.

    ``lose_writes`` / ``corrupt_writes`` / ``lose_reads`` / ``corrupt_reads`` are sets of
    indices: the n-th :meth:`write` call is dropped, or has one byte flipped in its middle;
    the n-th non-empty :meth:`read` result is thrown away, or has a byte flipped.
    """

    name = "lossy"

    def __init__(self, inner, *, lose_writes=(), corrupt_writes=(), lose_reads=(),
                 corrupt_reads=()):
        self.inner = inner
        self.response_timeout = 0.3
        self.lose_writes, self.corrupt_writes = set(lose_writes), set(corrupt_writes)
        self.lose_reads, self.corrupt_reads = set(lose_reads), set(corrupt_reads)
        self.writes = self.reads = 0
        self.sent = []

    @property
    def description(self):
        return f"lossy {self.inner.description}"

    def open(self):
        self.inner.open()

    def close(self):
        self.inner.close()

    def write(self, data):
        n, self.writes = self.writes, self.writes + 1
        self.sent.append(bytes(data))
        if n in self.lose_writes:
            return
        if n in self.corrupt_writes:
            data = bytearray(data)
            data[len(data) // 2] ^= 0x10
        self.inner.write(bytes(data))

    def read(self, size=4096, timeout=None):
        data = self.inner.read(size, timeout)
        if data:
            n, self.reads = self.reads, self.reads + 1
            if n in self.lose_reads:
                return b""
            if n in self.corrupt_reads:
                data = bytearray(data)
                data[len(data) // 2] ^= 0x10
                return bytes(data)
        return data


@pytest.fixture
def small_board(small_config):
    with GoldenTransport(small_config, clock_hz=50_000_000, baud=3_000_000) as t:
        yield t


@pytest.fixture(scope="session")
def golden_text():
    """What models.generate prints for the prompt, seed and temperature used below."""
    import contextlib
    import io

    from models import generate as golden_cli
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        golden_cli.main(["--prompt", "KING:", "--tokens", "120", "--seed", "5",
                         "--temperature", "0.7"])
    return out.getvalue()
