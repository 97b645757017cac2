"""``lib.data`` layouts of the core, built from the one definition in spikestream/memory_map.py."""

from amaranth import signed, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import Out

from spikestream.formats import MAX_LEVEL_BITS, STATE_BITS
from spikestream.memory_map import (ADDR_BITS, COUNTER_BITS, LANE_BITS, MEM_BITS, OP_BITS, TOKEN_BITS,
                          Mem, Status, addr_bits)

__all__ = ["word_layout", "mode_layout", "LaneOp", "lane_bus_layout", "lane_port_layout",
           "gather_layout",
           "segment_layout", "trace_layout", "trace_signature",
           "write_request_layout", "read_request_layout", "read_response_layout", "Command",
           "Result", "StatusWord"]


def word_layout(config, mem):
    """The ``StructLayout`` of a memory word (fields LSB first, as ``WordLayout.pack``)."""
    return data.StructLayout({f.name: signed(f.bits) if f.signed else unsigned(f.bits)
                              for f in config.layout(mem)})


def mode_layout(config):
    """A population's update mode, as its ``POP`` word holds it: kind, reset mode and spike
    levels ``K`` (``level_bits``)."""
    return data.StructLayout({f.name: unsigned(f.bits) for f in config.layout(Mem.POP)
                              if f.name in ("kind", "reset", "level_bits")})


def segment_layout(config):
    """A lane's row as its walker takes it: its first synapse word and its length
    (``CoreConfig.segment_layout``, from two row-pointer words)."""
    return data.StructLayout({f.name: unsigned(f.bits) for f in config.segment_layout()})


class LaneOp(enum.Enum, shape=3):
    """What the scheduler asks of the lanes this cycle (a one-cycle pulse on the lane bus)."""
    NOP = 0
    ROUTE = 1    # walk the spikes that follow on the bus; count = spikes, bounds = windows
    UPDATE = 2   # update rows addr .. addr+count-1, push spikes at qbase if push
    SAMPLE = 3   # stream readout membranes addr.. to the gather tree, count = vocabulary
    CLEAR = 4    # zero every v, a and accumulator
    WRITE = 5    # host write of data to mem[addr] in lane `lane`
    READ = 6     # host read of mem[addr] in lane `lane` onto the gather tree


def _lane_fields(config):
    return {
        "op": LaneOp,
        "lane": unsigned(config.lane_bits),
        "mem": unsigned(MEM_BITS),
        "addr": unsigned(config.address_bits),
        "data": unsigned(config.data_bits),
        "count": unsigned(config.size_bits),
        "qbase": unsigned(addr_bits(config.queue_depth)),
        "ptr_base": unsigned(config.ptr_bits),
        "size": unsigned(config.size_bits),
        "mode": mode_layout(config),
        "push": 1,
    }


def _spike_layout(config):
    return data.StructLayout({"valid": 1, "ptr": unsigned(config.ptr_bits),
                              "q": unsigned(config.q_bits)})


def lane_bus_layout(config):
    """What the scheduler sends down the trees to the lanes, every cycle.

    The phase fields (``addr``, ``count``, ``qbase``, ``ptr_base``, ``size``, ``mode``,
    ``push``, ``bounds``) are held for the whole phase; ``op`` is a pulse; ``spike`` carries
    one routed spike per cycle (its row-pointer address, source id plus the projection's
    base, and its value ``q``). ``bounds[l] .. bounds[l+1]`` is lane ``l``'s window of spike
    ranks.
    """
    return data.StructLayout({**_lane_fields(config),
                              "bounds": data.ArrayLayout(unsigned(config.size_bits),
                                                         config.lanes + 1),
                              "spike": _spike_layout(config)})


def lane_port_layout(config):
    """What one lane receives (:func:`lane_bus_layout` as the trees deliver it): every field
    but ``bounds``, of which only its own ``window`` (``bounds[l], bounds[l+1]``)."""
    return data.StructLayout({**_lane_fields(config),
                              "window": data.ArrayLayout(unsigned(config.size_bits), 2),
                              "spike": _spike_layout(config)})


def gather_layout(config):
    """What each lane drives into the OR tree (all zero unless it is that lane's turn)."""
    return data.StructLayout({"valid": 1, "data": unsigned(config.data_bits)})


def trace_layout(config):
    """One lane's neuron write-back as the observation port shows it (zero when idle): the
    spike value ``q`` (0: none) and the new state ``v``, ``a``, ``s``."""
    return data.StructLayout({"valid": 1, "q": unsigned(MAX_LEVEL_BITS),
                              "addr": unsigned(config.local_bits),
                              "v": signed(STATE_BITS), "a": signed(STATE_BITS), "s": 1})


def trace_signature(config):
    """The core's observation port: every lane's write-back, and whether any is valid."""
    return wiring.Signature({
        "valid": Out(1),
        "lanes": Out(data.ArrayLayout(trace_layout(config), config.lanes)),
    })


def write_request_layout(config):
    """Payload of the write port: memory id, lane, address, word."""
    return data.StructLayout({"mem": unsigned(MEM_BITS), "lane": unsigned(LANE_BITS),
                              "addr": unsigned(ADDR_BITS), "data": unsigned(config.data_bits)})


def read_request_layout(config):
    """Payload of the read port's request: memory id, lane, address."""
    return data.StructLayout({"mem": unsigned(MEM_BITS), "lane": unsigned(LANE_BITS),
                              "addr": unsigned(ADDR_BITS)})


def read_response_layout(config):
    """Payload of the read port's response: the word, or ``error`` for a refused read."""
    return data.StructLayout({"data": unsigned(config.data_bits), "error": 1})


Command = data.StructLayout({"op": unsigned(OP_BITS), "token": unsigned(TOKEN_BITS)})

Result = data.StructLayout({
    "op": unsigned(OP_BITS),
    "token": unsigned(TOKEN_BITS),
    "cycles": unsigned(COUNTER_BITS),
    "spikes": unsigned(COUNTER_BITS),
    "error": 1,
})

StatusWord = data.StructLayout({bit.name.lower(): 1 for bit in sorted(Status)})
"""The status word; bit ``n`` is :class:`spikestream.memory_map.Status` ``n``."""
