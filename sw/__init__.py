"""The host side: drive a board (or a stand-in for one) over the link protocol.

* :mod:`sw.transport`: byte pipes to a board (serial port, golden board, simulated SoC);
* :mod:`sw.client`: the protocol client (identify, load an image, run, generate);
* :mod:`sw.golden_board`: a board in software, answering the protocol with the golden model;
* :mod:`sw.generate`: ``python -m sw.generate``, streamed text generation;
* :mod:`sw.pty_board`: the golden board behind a pseudo-terminal (a port with no hardware);
* :mod:`sw.fake_board`: misbehaving boards (silent, garbage, floods, impossible answers),
  on a pseudo-terminal or in process, for tests and the hostile-input bench;
* :mod:`sw.board`: what the host assumes about the default board build;
* :mod:`sw.errors`: the exceptions, each with a one-line message.
"""
