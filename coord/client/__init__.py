"""coord.client: the asyncio etcd-v3 client the scheduler (and tests) use."""

from coord.client.auth import ClientAuth
from coord.client.channels import ChannelFactory, ClientTLS, network_channel
from coord.client.client import Client
from coord.client.errors import (
    ClientError,
    CompactedError,
    FutureRevisionError,
    LeaseNotFoundError,
    ServerError,
    UnavailableError,
    WatchCanceledError,
)
from coord.client.keepalive import KeepAlive
from coord.client.txn import Compare, delete, get, prefix_end, put, txn_op
from coord.client.types import (
    DeleteResult,
    Event,
    EventType,
    KeyValue,
    LeaseGrant,
    LeaseTTL,
    Member,
    PutResult,
    RangeResult,
    Status,
    TxnResult,
    WatchBatch,
)

__all__ = [
    "ChannelFactory", "Client", "ClientAuth", "ClientError", "ClientTLS", "CompactedError",
    "Compare",
    "DeleteResult", "Event",
    "EventType", "FutureRevisionError", "KeepAlive", "KeyValue", "LeaseGrant",
    "LeaseNotFoundError", "LeaseTTL", "Member", "PutResult", "RangeResult", "ServerError",
    "Status", "TxnResult", "UnavailableError", "WatchBatch", "WatchCanceledError", "delete",
    "get", "network_channel", "prefix_end", "put", "txn_op",
]
