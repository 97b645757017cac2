"""spikestream's ground floor: the contract every layer shares, defined once.

Pure Python (numpy at most; no torch, no Amaranth): number formats and neuron kinds
(:mod:`~spikestream.formats`), the core's pipeline timing (:mod:`~spikestream.timing`), the
integer network and its lane layout (:mod:`~spikestream.network`), the network image file
(:mod:`~spikestream.image`), the sampler (:mod:`~spikestream.sampler`), the core's memory map
and word layouts (:mod:`~spikestream.memory_map`), the link protocol
(:mod:`~spikestream.protocol`), the ECP5 resources and memory planner
(:mod:`~spikestream.ecp5`, :mod:`~spikestream.capacity`), the board defaults
(:mod:`~spikestream.board`), safe file handling (:mod:`~spikestream.files`) and how commands
end (:mod:`~spikestream.cmdline`).

The product's folders are the floors above, each importing only from lower ones::

    spikestream  <-  models (torch)  <-  hw (gateware)  <-  boards  <-  sim  <-  sw
                 <-  hw.build  <-  bench, spikestream.cli (the console script)

tests/test_floors.py checks this on every import, those inside functions included.
"""

__version__ = "0.2.0"
