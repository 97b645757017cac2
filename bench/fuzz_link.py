"""Fuzz the link: random and mutated frames against the simulated link and core.

    python -m bench.fuzz_link [--frames 10000] [--seed 1] [--batch 100] [--json] [--write]

It drives the link below the UART (the byte stream the UART receiver would hand it, and
the receiver's error pulse; bytes out are taken as the transmitter would), with the real
:class:`hw.link.Link` and :class:`hw.core.Core` in Verilator (cocotb), a small core (2 lanes)
with a random image preloaded. Below the UART each byte costs two clock cycles rather than
twenty, and a byte is only offered while the link is idle, so that no byte is dropped and
the reference knows every frame the link sees.

Stimulus, per frame: a valid request (IDENTIFY, STATUS, TAG, READ, WRITE, RESET, RUN,
GENERATE); such a request with a field mutated and its CRC recomputed (op, seq, memory,
lane, address, count, a word, bytes added or removed); bit flips on the wire; a frame cut
short; random bytes (ENDs among them); a UART error pulse inside a frame; now and then a
long frame (a whole lane of words, or a payload around the 2046-byte limit).

Checks, per frame decoded (by :class:`hw.protocol.FrameDecoder` fed the same bytes and
error pulses): the answer is what :class:`sim.link_host.LinkModel` says (status by
:func:`hw.protocol.check_request`, exact bodies for IDENTIFY/STATUS/READ of known words,
exact core writes for an accepted WRITE, TOKEN frames for RUN/GENERATE); no core write lies
outside its memory; a rejected frame causes no core write (except the one CORE value the
core itself refuses, which is counted apart); after every batch a good IDENTIFY is answered.
"""

import argparse
import dataclasses
import json
import os
import platform
import random
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import cocotb
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from hw import protocol as P
from hw.core import Core
from hw.core.layouts import write_request_layout
from hw.link import Link
from hw.memory_map import LANE_MEMS, CoreConfig, CoreReg, Mem, Write, image_writes
from sim.link_host import LinkModel, random_image, refused_core_write
from sim.runner import CocotbFailure, build_and_run, load_config

from ._report import update_section

CONFIG = CoreConfig(lanes=2, neurons_per_lane=16, syn_depth=136, ptr_depth=64, max_pops=4,
                    max_projs=8, max_vocab=8, spike_depth=16)
CLOCK_HZ, BAUD = 100_000_000, 3_000_000
TAG = 0x0F0F_C0DB
INIT_SEED = 5
TITLE = "Link fuzz"


class LinkHarness(wiring.Component):
    """The SoC without its UART: the link's byte streams and error input are the ports.

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Bytes as the UART receiver hands them over.
    rx_error : In(1)
        The receiver's error pulse.
    tx : Out(stream.Signature(8))
        Bytes to send.
    busy : Out(1)
        The link is working on a request.
    """
    rx: In(stream.Signature(8))
    rx_error: In(1)
    tx: Out(stream.Signature(8))
    busy: Out(1)

    def __init__(self, config, init=None, tag=0):
        self._config, self._init, self._tag = config, init, tag
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = Link(self._config, clock_hz=CLOCK_HZ, baud=BAUD,
                                        tag=self._tag)
        m.submodules.core = core = Core(self._config, init=self._init)
        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.tx))
        m.d.comb += [link.rx_error.eq(self.rx_error), self.busy.eq(link.busy),
                     link.core_status.eq(core.status)]
        wiring.connect(m, link.write, core.write)
        wiring.connect(m, link.read, core.read)
        wiring.connect(m, core.read_data, link.read_data)
        wiring.connect(m, link.cmd, core.cmd)
        wiring.connect(m, core.result, link.result)
        return m


# --- stimulus (pure Python) ------------------------------------------------------------------

class Stimulus:
    """Random requests and their mutations for a core built for ``config``."""

    KINDS = ("valid", "field", "flip", "cut", "noise", "uart_error", "long")
    WEIGHTS = (20, 40, 14, 10, 8, 7, 1)

    def __init__(self, config, vocab, seed):
        self.config = config
        self.vocab = vocab
        self.rng = random.Random(seed)
        self.wb = P.word_bytes(config)
        self.seq = 0

    def _mem_lane_addr(self, count_max):
        r, cfg = self.rng, self.config
        mem = r.choice(list(Mem))
        lane = r.randrange(cfg.lanes) if mem in LANE_MEMS else 0
        depth = cfg.depth(mem)
        count = r.randrange(1, min(depth, count_max) + 1)
        return mem, lane, r.randrange(0, depth - count + 1), count

    def _word(self, mem):
        r, cfg = self.rng, self.config
        if mem == Mem.CORE:
            return r.choice([r.randrange(0, 10), r.randrange(1 << 16), r.getrandbits(32)])
        return r.getrandbits(cfg.layout(mem).bits if r.random() < 0.8 else cfg.data_bits)

    def valid(self):
        """A request payload that passes every check (WRITE values may still be refused)."""
        r = self.rng
        self.seq = (self.seq + 1) & 0xFF
        op = r.choice([P.Cmd.IDENTIFY, P.Cmd.STATUS, P.Cmd.TAG, P.Cmd.READ, P.Cmd.READ,
                       P.Cmd.WRITE, P.Cmd.WRITE, P.Cmd.WRITE, P.Cmd.RESET, P.Cmd.RUN,
                       P.Cmd.GENERATE])
        if op == P.Cmd.TAG:
            body = struct.pack(P.TAG_FORMAT, r.getrandbits(32))
        elif op == P.Cmd.READ:
            mem, lane, addr, count = self._mem_lane_addr(12)
            body = struct.pack(P.READ_HEADER, mem, lane, addr, count)
        elif op == P.Cmd.WRITE:
            mem, lane, addr, count = self._mem_lane_addr(1 if r.random() < 0.5 else 20)
            if mem == Mem.ACC:
                mem, lane = Mem.STATE, lane
            if mem == Mem.CORE:
                count, addr = 1, r.randrange(len(CoreReg))
            body = struct.pack(P.WRITE_HEADER, mem, lane, addr, count) + \
                P.pack_words([self._word(mem) for _ in range(count)], self.wb)
        elif op == P.Cmd.RUN:
            n = r.randrange(1, 5)
            body = struct.pack(f"<{n}H", *(r.randrange(self.vocab + 2) for _ in range(n)))
        elif op == P.Cmd.GENERATE:
            body = struct.pack(P.GENERATE_FORMAT, r.randrange(self.vocab + 1), r.randrange(1, 5))
        else:
            body = b""
        return P.request(op, self.seq, body)

    def field(self, payload):
        """``payload`` with one field changed; the CRC stays right."""
        r = self.rng
        p = bytearray(payload)
        what = r.randrange(9)
        if what == 0:
            p[0] = r.choice([0, 9, P.Cmd.TOKEN, 0x7F, P.NACK_OP, r.randrange(256),
                             r.randrange(1, 9)])
        elif what == 1 and len(p) > 2:                    # memory id
            p[2] = r.choice([r.randrange(16), 255, Mem.ACC, Mem.CORE])
        elif what == 2 and len(p) > 3:                    # lane
            p[3] = r.choice([self.config.lanes, self.config.lanes - 1, 1, 255, 0])
        elif what == 3 and len(p) >= 8:                   # address
            addr = r.choice([self.config.depth(Mem(p[2] & 7)) - 1, 1 << 24, (1 << 32) - 1,
                             r.getrandbits(32), r.randrange(200)])
            p[4:8] = addr.to_bytes(4, "little")
        elif what == 4 and len(p) >= 10:                  # count
            p[8:10] = r.choice([0, 1, 2, P.MAX_READ, P.MAX_READ + 1, 0xFFFF,
                                r.randrange(40)]).to_bytes(2, "little")
        elif what == 5 and p[0] == P.Cmd.GENERATE and len(p) == 6:
            p[4:6] = r.choice([0, 1, 2, 5]).to_bytes(2, "little")
        elif what == 6 and len(p) > 2:                    # a byte of the body
            k = r.randrange(2, len(p))
            p[k] ^= 1 << r.randrange(8)
        elif what == 7:                                   # bytes added
            p += bytes(r.randrange(256) for _ in range(r.choice([1, 2, self.wb, 7])))
        else:                                             # bytes removed
            del p[max(0, len(p) - r.randrange(1, 4)):]
        if len(p) == 6 and p[0] == P.Cmd.GENERATE and int.from_bytes(p[4:6], "little") > 5:
            p[4:6] = (5).to_bytes(2, "little")            # keep runs short
        return bytes(p)

    def next(self):
        """One unit of line traffic: ``(kind, items)``; items are byte values and ``None``
        for a UART error pulse."""
        r = self.rng
        kind = r.choices(self.KINDS, self.WEIGHTS)[0]
        payload = self.valid()
        if kind == "valid":
            return kind, list(P.frame(payload))
        if kind == "field":
            return kind, list(P.frame(self.field(payload)))
        wire = list(P.frame(payload))
        if kind == "flip":
            for _ in range(r.randrange(1, 4)):
                k = r.randrange(1, len(wire) - 1)
                wire[k] ^= 1 << r.randrange(8)
            return kind, wire
        if kind == "cut":
            return kind, wire[:r.randrange(1, len(wire) - 1)] + [P.END]
        if kind == "long":
            if r.random() < 0.5:                          # a whole lane of SYN words
                depth = self.config.depth(Mem.SYN)
                payload = P.request(P.Cmd.WRITE, self.seq, struct.pack(
                    P.WRITE_HEADER, Mem.SYN, r.randrange(self.config.lanes), 0, depth) +
                    P.pack_words([self._word(Mem.SYN) for _ in range(depth)], self.wb))
            else:                                         # around the length limit
                n = r.randrange(P.MAX_PAYLOAD - 4, P.MAX_PAYLOAD + 40)
                payload = (payload + bytes(r.randrange(256) for _ in range(n)))[:n]
            return kind, list(P.frame(payload))
        if kind == "noise":
            return kind, [r.choice([P.END, P.ESC, P.ESC_END, r.randrange(256)])
                          for _ in range(r.randrange(1, 40))] + [P.END]
        wire.insert(r.randrange(1, len(wire)), None)
        return kind, wire


# --- the cocotb side -------------------------------------------------------------------------

class Driver:
    """Every clock edge of the run passes through :meth:`tick`: inputs are driven just after
    an edge and outputs sampled once settled, so each sample decides exactly one upcoming
    edge's handshakes (tx bytes and core writes are recorded there, none missed or doubled).
    """

    def __init__(self, dut, config):
        self.dut = dut
        self.tx = bytearray()
        self.writes = []
        self.cycles = 0
        self.busy = False
        self._inputs = {}
        self._fields = {name: (f.offset, f.width) for name, f in write_request_layout(config)}

    def _set(self, name, value):
        if self._inputs.get(name) != value:
            getattr(self.dut, name).value = value
            self._inputs[name] = value

    def _field(self, v, name):
        offset, width = self._fields[name]
        return (v >> offset) & ((1 << width) - 1)

    async def tick(self, valid=0, payload=None, error=0):
        """One clock: drive ``rx``/``rx_error`` for the next edge; return whether ``rx``'s
        byte is taken at that edge."""
        dut, core = self.dut, self.dut.core
        await RisingEdge(dut.clk)
        self._set("rx__valid", valid)
        if payload is not None:
            self._set("rx__payload", payload)
        self._set("rx_error", error)
        await ReadOnly()
        self.cycles += 1
        self.busy = bool(int(dut.busy.value))
        if int(dut.tx__valid.value):                     # tx.ready is always 1
            self.tx.append(int(dut.tx__payload.value))
        if int(core.write__valid.value) and int(core.write__ready.value):
            v = int(core.write__payload.value)
            mem = self._field(v, "mem")
            self.writes.append(Write(Mem(mem) if mem in set(Mem) else mem,
                                     self._field(v, "lane"), self._field(v, "addr"),
                                     self._field(v, "data")))
        return bool(valid and int(dut.rx__ready.value))

    async def send(self, item):
        """One byte (held until taken), or ``None``: a one-cycle UART error pulse."""
        if item is None:
            await self.tick(error=1)
            return
        while not await self.tick(1, item):
            pass

    async def settle(self, limit):
        """After an END: the link turns busy within two cycles; wait until it is idle."""
        for _ in range(3):
            await self.tick()
        n = 0
        while self.busy:
            await self.tick()
            n += 1
            if n > limit:
                raise TimeoutError(f"the link stayed busy for {limit} cycles")


def in_bounds(w, config):
    """A core write inside its memory (CORE values are the core's to judge)."""
    if w.mem not in set(Mem) or w.mem == Mem.ACC:
        return False
    lane_ok = w.lane < config.lanes if w.mem in LANE_MEMS else w.lane == 0
    return lane_ok and w.addr < config.depth(w.mem) and w.data < 1 << config.data_bits


@cocotb.test()
async def fuzz(dut):
    """See the module docstring."""
    settings = load_config()
    cfg = CoreConfig(**settings["core"])
    _, image = random_image(settings["init_seed"], cfg)
    model = LinkModel(cfg, clock_hz=CLOCK_HZ, baud=BAUD, init=image_writes(image, cfg),
                      tag=settings["tag"])
    stim = Stimulus(cfg, image.net.vocab_size, settings["seed"])

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.rx__valid.value = 0
    dut.rx_error.value = 0
    dut.tx__ready.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    drv = Driver(dut, cfg)

    stats = {"frames_sent": 0, "frames_decoded": 0, "by_kind": {}, "by_status": {},
             "core_writes": 0, "out_of_bounds_writes": 0, "writes_by_rejected": 0,
             "refused_core_values": 0, "mismatches": 0, "alive_checks": 0,
             "token_frames": 0, "problems": []}
    decoder = P.FrameDecoder()

    def note(problem):
        stats["mismatches"] += 1
        if len(stats["problems"]) < 20:
            stats["problems"].append(problem)

    async def transmit(items, kind):
        """Send a unit of traffic; after every END, check what the link did about it."""
        answers = []
        for item in items:
            t0, w0 = len(drv.tx), len(drv.writes)
            await drv.send(item)
            if item is None:
                decoder.mark_bad()
                continue
            frames = decoder.feed(bytes([item]))
            if item != P.END:
                continue
            await drv.settle(5_000_000)
            got = []
            for status, payload in P.FrameDecoder(max_length=1 << 20,
                                                  min_length=3).feed(bytes(drv.tx[t0:])):
                if status != P.LinkStatus.OK:
                    note(f"{kind}: damaged response {payload.hex()}")
                else:
                    got.append(P.parse_response(payload))
            new = drv.writes[w0:]
            stats["core_writes"] += len(new)
            for w in new:
                if not in_bounds(w, cfg):
                    stats["out_of_bounds_writes"] += 1
                    note(f"{kind}: out-of-bounds write {w}")
            if not frames:
                if got or new:
                    note(f"{kind}: an ignored END was answered {got} / wrote {new}")
                continue
            (fstatus, payload), = frames
            stats["frames_decoded"] += 1
            final = got[-1][2] if got else None
            # Rejected by the reference (whatever the link answered): it may not write.
            accepted = fstatus == P.LinkStatus.OK and \
                P.check_request(payload, cfg) == P.LinkStatus.OK
            name = P.LinkStatus(final).name if final in set(P.LinkStatus) else str(final)
            if fstatus != P.LinkStatus.OK:
                name = "NACK " + name
            stats["by_status"][name] = stats["by_status"].get(name, 0) + 1
            stats["token_frames"] += sum(r[0] == P.Cmd.TOKEN and r[2] == 0 for r in got)
            if not accepted and new:
                allowed = refused_core_write(payload, cfg) if fstatus == P.LinkStatus.OK \
                    else None
                if allowed is not None and new == [allowed]:
                    stats["refused_core_values"] += 1
                else:
                    stats["writes_by_rejected"] += len(new)
            for problem in model.check(fstatus, payload, got, new):
                note(f"{kind} {payload[:12].hex()}: {problem}")
            answers += got
        return answers

    t_start = time.time()
    progress = Path(settings["progress"])
    identify = list(P.frame(P.request(P.Cmd.IDENTIFY, 0xA1)))
    for n in range(settings["frames"]):
        kind, items = stim.next()
        stats["by_kind"][kind] = stats["by_kind"].get(kind, 0) + 1
        await transmit(items, kind)
        stats["frames_sent"] += 1
        if (n + 1) % settings["batch"] == 0 or n + 1 == settings["frames"]:
            # Alive: a lone END closes whatever is open, then a good IDENTIFY.
            await transmit([P.END], "flush")
            got = await transmit(identify, "alive")
            if got == [(P.Cmd.IDENTIFY, 0xA1, 0, P.identity_of(cfg, CLOCK_HZ, BAUD,
                                                                model.tag))]:
                stats["alive_checks"] += 1
            else:
                note(f"after frame {n + 1}: IDENTIFY got {got}")
            with progress.open("a") as f:
                f.write(json.dumps({"sent": n + 1, "mismatches": stats["mismatches"],
                                    "wall_s": round(time.time() - t_start, 1)}) + "\n")
    stats["cycles"] = drv.cycles
    stats["sim_wall_s"] = round(time.time() - t_start, 1)
    Path(settings["out"]).write_text(json.dumps(stats, indent=1))
    assert stats["mismatches"] == 0, stats["problems"][:5]


# --- the command line ------------------------------------------------------------------------

def run(frames, seed, batch):
    _, image = random_image(INIT_SEED, CONFIG)
    harness = LinkHarness(CONFIG, init=image_writes(image, CONFIG), tag=TAG)
    with tempfile.TemporaryDirectory() as tmp:
        out, progress = Path(tmp) / "result.json", Path(tmp) / "progress.jsonl"
        progress.touch()
        settings = {"core": dataclasses.asdict(CONFIG), "init_seed": INIT_SEED, "tag": TAG,
                    "seed": seed, "frames": frames, "batch": batch, "out": str(out),
                    "progress": str(progress)}
        error = []

        def target():
            try:
                build_and_run(harness, "link_harness", "bench.fuzz_link", config=settings,
                              run_name=f"fuzz-{seed}")
            except (CocotbFailure, RuntimeError) as e:
                error.append(e)

        t0 = time.time()
        thread = threading.Thread(target=target)
        thread.start()
        seen = 0
        while thread.is_alive():
            thread.join(5)
            lines = progress.read_text().splitlines()
            for line in lines[seen:]:
                p = json.loads(line)
                print(f"  {p['sent']:6d} frames sent, {p['mismatches']} mismatches "
                      f"({p['wall_s']:.0f} s)", file=sys.stderr)
            seen = len(lines)
        if not out.exists():
            raise SystemExit(f"fuzz run failed: {error[0] if error else 'no result'}")
        stats = json.loads(out.read_text())
        stats["wall_s"] = round(time.time() - t0, 1)
        stats["seed"] = seed
        stats["drive"] = "byte stream below the UART (UARTRx output), Verilator"
        stats["machine"] = f"{os.cpu_count()} CPU cores ({platform.machine()}, shared)"
        return stats


def report(stats):
    lines = [
        f"{stats['frames_sent']} frames sent (seed {stats['seed']}), driving the link "
        f"{stats['drive']}; {stats['frames_decoded']} frames decoded by the link, "
        f"{stats['token_frames']} TOKEN frames streamed, {stats['cycles']} clock cycles, "
        f"{stats['wall_s']:.0f} s wall, {stats['sim_wall_s']:.0f} s of it simulating, on "
        f"{stats['machine']}.",
        "",
        "| check | result |", "|---|---|",
        f"| answers that differ from the reference (hw.protocol + sim.link_host) | "
        f"{stats['mismatches']} |",
        f"| core writes outside their memory | {stats['out_of_bounds_writes']} |",
        f"| core writes caused by rejected frames | {stats['writes_by_rejected']} |",
        f"| CORE values refused by the core (one write each, nothing stored) | "
        f"{stats['refused_core_values']} |",
        f"| core writes by accepted WRITEs | {stats['core_writes'] - stats['refused_core_values']} |",
        f"| batches after which a good IDENTIFY was answered | {stats['alive_checks']} |",
        "",
        "Stimulus: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["by_kind"].items())) + ".",
        "",
        "Answers: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["by_status"].items(),
                                                          key=lambda kv: -kv[1])) + ".",
    ]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz_link",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = ap.parse_args(argv)
    stats = run(args.frames, args.seed, args.batch)
    md = report(stats)
    print(json.dumps(stats, indent=1) if args.json else md)
    if args.write:
        cmd = "python -m bench.fuzz_link " + " ".join(argv if argv is not None else sys.argv[1:])
        update_section(TITLE, cmd, md)
    failed = stats["mismatches"] or stats["out_of_bounds_writes"] or \
        stats["writes_by_rejected"] or stats["alive_checks"] == 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
