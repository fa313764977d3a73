"""What the risk gate offers other plugins: its trading records, as stored per scope (the
Firestore sink mirrors them). Other plugins import from here, never from risk's other modules."""

from navstream.plugins.risk.state import read_records
from navstream.plugins.risk.trading import TradingRecord

__all__ = ["TradingRecord", "read_records"]
