"""The frames-out list both ends of a connection write to, without I/O: frames appended
(:meth:`FrameOutput._write`), taken by the I/O side (:meth:`FrameOutput.data_to_send`, or
the list itself), which is told when the list stops being empty and when it holds enough to
hand over at once."""

from __future__ import annotations

from coord.rpc.h2.frames import FLUSH_AT


class FrameOutput:
    """What one side has written and the transport has not taken yet."""

    _out: list[bytes | memoryview]
    _out_size: int

    def _output_pending(self) -> None:
        """The output list just stopped being empty (the asyncio side hands it to the
        transport at the end of the loop turn)."""

    def _output_full(self) -> None:
        """The output list holds :data:`FLUSH_AT` bytes: hand them over now (so that the
        transport sees the volume and can pause this side)."""

    def data_to_send(self) -> bytes:
        """Everything written since the last call, in order; the list is emptied."""
        data = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        return data

    def _write(self, data: bytes | memoryview) -> None:
        if not self._out:
            self._output_pending()
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= FLUSH_AT:
            self._output_full()
