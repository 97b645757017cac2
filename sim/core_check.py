"""The scoreboard of the core testbenches: one timestep of the core against the golden model.

Pure Python (no cocotb, no simulator), so that a test can also run it on two golden models
(one of them on a deliberately corrupted network) to predict exactly what the testbench
must report.

What the core showed for one STEP is an :class:`Observed`: the result port's fields, the
cycle count measured on the ports, every neuron write-back of its trace port and (where
read) the output populations' results as the host reads them
(:func:`spikestream.memory_map.output_reads`). :func:`compare_step` turns it and the golden
:class:`models.golden.StepResult` into a list of :class:`Mismatch` es in a fixed order: the
error flag; then population by population in update order, neuron by neuron, whether it was
written back exactly once and its spike value ``q``, ``v``, ``a`` and ``s`` (spiked: ``q >
0``); write-backs to no neuron; the outputs read; then the sampled token, the spike total
(neurons that spiked), the reported and the measured cycle counts.
"""

from dataclasses import dataclass, field

import numpy as np

from spikestream.memory_map import Outputs
from spikestream.network import pop_bases

__all__ = ["WriteBack", "Observed", "Mismatch", "NeuronMap", "compare_step", "golden_outputs",
           "observe_golden", "format_mismatches"]


@dataclass(frozen=True)
class WriteBack:
    """One neuron's new state as a lane wrote it back (the core's trace port): its spike
    value ``q`` (0: none) and ``v``, ``a``, ``s``."""
    lane: int
    addr: int
    q: int
    v: int
    a: int
    s: int


@dataclass
class Observed:
    """What the core showed for one STEP.

    ``cycles`` is the count on the result port, ``measured`` the count measured on the
    ports (``None`` where not measured), ``spikes`` the result's spike total, ``outputs``
    the :class:`~spikestream.memory_map.Outputs` read after the step (``None``: not read).
    """
    error: int
    token: int
    cycles: int
    measured: object
    spikes: int
    writebacks: list = field(default_factory=list)
    outputs: object = None


@dataclass(frozen=True)
class Mismatch:
    """One difference between the core and the golden model.

    ``what`` names the quantity: ``"h0[5].v"`` (population ``h0``, neuron ``5`` in core
    order, field ``q``, ``v``, ``a`` or ``s``), ``"h0[5]"`` for a neuron written back other
    than once, ``"stray write-back"``, ``"output h0 spikes"`` or ``"output h0 membranes"``
    (as the host read them), ``"token"``, ``"spike total"``, ``"cycles (reported)"``,
    ``"cycles (measured)"`` or ``"error flag"``; ``where`` says where in the core a neuron
    lives (``"lane 2, address 7"``).
    """
    step: int
    token_in: int
    what: str
    expected: object
    got: object
    where: str = ""

    def __str__(self):
        at = f" [{self.where}]" if self.where else ""
        return (f"step {self.step} (input token {self.token_in}): {self.what}{at}: "
                f"expected {self.expected}, got {self.got}")

    def as_dict(self):
        return {"step": self.step, "token_in": self.token_in, "what": self.what,
                "expected": self.expected, "got": self.got, "where": self.where}


class NeuronMap:
    """Where each neuron of ``net`` lives on a core of ``lanes`` lanes, both ways."""

    def __init__(self, net, lanes):
        self.net, self.lanes = net, lanes
        self.base = pop_bases(net, lanes)[0]
        self._by_addr = {}
        for p, pop in enumerate(net.populations):
            for n in range(pop.size):
                self._by_addr[n % lanes, self.base[p] + n // lanes] = (p, n)

    def place(self, p, n):
        """``(lane, local address)`` of neuron ``n`` of population ``p``."""
        return n % self.lanes, self.base[p] + n // self.lanes

    def neuron(self, lane, addr):
        """``(population, neuron)`` at ``lane``/``addr``, or ``None``."""
        return self._by_addr.get((lane, addr))

    def where(self, p, n):
        lane, addr = self.place(p, n)
        return f"lane {lane}, address {addr}"


def compare_step(step, token_in, expected, observed, neurons):
    """Every difference between golden ``expected`` (a ``StepResult``, batch 1) and the
    core's ``observed`` (:class:`Observed`) for timestep ``step``, in the module's order.

    ``neurons`` is the :class:`NeuronMap` of the network.
    """
    out = []

    def diff(what, exp, got, where=""):
        if exp != got:
            out.append(Mismatch(step, token_in, what, exp, got, where))

    diff("error flag", 0, observed.error)
    seen = {}
    strays = []
    for wb in observed.writebacks:
        key = neurons.neuron(wb.lane, wb.addr)
        if key is None:
            strays.append(wb)
        else:
            seen.setdefault(key, []).append(wb)
    net = neurons.net
    for p, pop in enumerate(net.populations):
        values = expected.values[p][0].tolist()
        vs, as_ = expected.v[p][0].tolist(), expected.a[p][0].tolist()
        for n in range(pop.size):
            name, where = f"{pop.name}[{n}]", neurons.where(p, n)
            got = seen.get((p, n), [])
            if len(got) != 1:
                out.append(Mismatch(step, token_in, name, "1 write-back",
                                    f"{len(got)} write-backs", where))
                if not got:
                    continue
            wb = got[0]
            diff(f"{name}.q", values[n], wb.q, where)
            diff(f"{name}.v", vs[n], wb.v, where)
            diff(f"{name}.a", as_[n], wb.a, where)
            diff(f"{name}.s", int(values[n] > 0), wb.s, where)
    for wb in strays:
        out.append(Mismatch(step, token_in, "stray write-back", "none",
                            f"lane {wb.lane}, address {wb.addr}", ""))
    if observed.outputs is not None:
        want = golden_outputs(expected, net)
        for p in net.outputs:
            name = net.populations[p].name
            if p in want.spikes:
                exp = tuple(x.tolist() for x in want.spikes[p])
                got = observed.outputs.spikes.get(p)
                diff(f"output {name} spikes", exp,
                     None if got is None else tuple(x.tolist() for x in got))
            else:
                got = observed.outputs.membranes.get(p)
                diff(f"output {name} membranes", want.membranes[p].tolist(),
                     None if got is None else got.tolist())
    diff("token", int(expected.token[0]), observed.token)
    diff("spike total", sum(int(s[0].sum()) for s in expected.spikes), observed.spikes)
    diff("cycles (reported)", int(expected.cycles[0]), observed.cycles)
    if observed.measured is not None:
        diff("cycles (measured)", int(expected.cycles[0]), observed.measured)
    return out


def golden_outputs(result, net):
    """The :class:`~spikestream.memory_map.Outputs` of golden ``result`` (batch 1)."""
    spikes, membranes = {}, {}
    for p in net.outputs:
        if net.populations[p].spiking:
            q = result.values[p][0].numpy()
            ids = np.flatnonzero(q)
            spikes[p] = (ids.astype(np.int64), q[ids].astype(np.int64))
        else:
            membranes[p] = result.v[p][0].numpy().astype(np.int64)
    return Outputs(spikes=spikes, membranes=membranes)


def observe_golden(result, neurons):
    """The :class:`Observed` a perfect core would show for golden ``result`` (batch 1):
    used to compare two golden models with :func:`compare_step`."""
    wbs = []
    for p, pop in enumerate(neurons.net.populations):
        values = result.values[p][0].tolist()
        vs, as_ = result.v[p][0].tolist(), result.a[p][0].tolist()
        for n in range(pop.size):
            lane, addr = neurons.place(p, n)
            wbs.append(WriteBack(lane, addr, values[n], vs[n], as_[n], int(values[n] > 0)))
    cycles = int(result.cycles[0])
    return Observed(error=0, token=int(result.token[0]), cycles=cycles, measured=cycles,
                    spikes=sum(int(s[0].sum()) for s in result.spikes), writebacks=wbs,
                    outputs=golden_outputs(result, neurons.net))


def format_mismatches(mismatches, limit=12):
    """A report of ``mismatches``: the count, then one line each (at most ``limit``)."""
    lines = [f"{len(mismatches)} mismatch(es) against the golden model; the first:"]
    lines += [f"  {m}" for m in mismatches[:limit]]
    if len(mismatches) > limit:
        lines.append(f"  ... and {len(mismatches) - limit} more")
    return "\n".join(lines)
