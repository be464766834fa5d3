"""Live market-data streams (websocket) behind the ``Exchange`` port's trade stream."""
