from market.models.accounts import ApiKey, Role, User
from market.models.brokers import BrokerAppointment, BrokeredJob, BrokerFee
from market.models.files import DataFile
from market.models.jobs import JobRequest
from market.models.ledger import Deposit, LedgerAccount, LedgerTransfer
from market.models.providers import Provider, Resource

__all__ = [
    "ApiKey",
    "BrokerAppointment",
    "BrokeredJob",
    "BrokerFee",
    "DataFile",
    "Role",
    "Deposit",
    "JobRequest",
    "LedgerAccount",
    "LedgerTransfer",
    "Provider",
    "Resource",
    "User",
]
