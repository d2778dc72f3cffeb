"""The hub's WebSocket connections: uvicorn's sans-I/O protocol, closing cleanly on bad frames.

Two edges of RFC 6455 section 7.4.1 that uvicorn handled badly:

- a text message that is not UTF-8 is closed with 1007, and is the client's
  fault: it logs no traceback in the hub's log (uvicorn logged one);
- a frame or message over the size limit is closed with 1009. uvicorn wrote the
  close frame and closed the socket at once, on bytes the client was still
  sending, so the client often got a TCP reset instead of the close frame. Here
  the hub stops writing, reads and drops what still comes for a moment, then
  closes, as it does for any frame it fails the connection on.
"""

from __future__ import annotations

import logging

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

logger = logging.getLogger("tidings.ws")

LINGER_S = 2.0  # how long a failed connection's last bytes are read and dropped


class HubWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with the two edges above made right."""

    _failed = False

    def data_received(self, data: bytes) -> None:
        if self._failed:
            return  # closing: what the client still sends is dropped
        super().data_received(data)

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self.frames = []
                logger.debug("%s sent a text message that is not UTF-8", self.client)
                self.conn.fail(1007, "text message is not valid UTF-8")
                self.handle_parser_exception()
                return
            self.frames = []
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
            return
        super().send_receive_event_to_app()

    def handle_parser_exception(self) -> None:
        assert self.conn.close_sent is not None
        close = self.conn.close_sent
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": close.code, "reason": close.reason}
        )
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self._failed = True
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)


__all__ = ["HubWebSocketProtocol"]
