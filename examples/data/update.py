#parsed
"""Add a ``currency`` field to ``Account``: existing accounts are converted now (eagerly)."""

import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.runner import get_runner
from pymoult.highlevel.updates import EagerConversionUpdate

app = sys.modules["__main__"]


class Account:
    def __init__(self, owner, balance=0, currency="EUR"):
        self.owner = owner
        self.balance = balance
        self.currency = currency

    def describe(self):
        return f"{self.owner} {self.balance} {self.currency}"


def add_currency(account):
    account.currency = "EUR"


fetch_manager("runtime").add_update(EagerConversionUpdate(
    app.Account, Account, add_currency, name="accounts get a currency",
    threads=[get_runner()], timeout=10))
