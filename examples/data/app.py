"""Data: a field added to objects that already exist (eager conversion).

    pymoult run examples/data/app.py [--interval SECONDS]
    pymoult push examples/data/update.py --wait --to ADDRESS
    pymoult demo data    # all in one command: start, push, show the change, Ctrl-C

A bank pays one unit of interest to every account each round, opens a new account every fourth
round, and prints the accounts. The update gives ``Account`` a ``currency`` field: every
existing account is converted at once (the transformer sets its currency) while the Runner is
parked between rounds, the class is updated in place (same identity, new methods), and accounts
opened afterwards get the field from the new ``__init__``. Balances are kept. Ctrl-C ends it.
"""

import argparse
import time

from pymoult.lowlevel.alterability import staticUpdatePoint


class Account:
    def __init__(self, owner, balance=0):
        self.owner = owner
        self.balance = balance

    def describe(self):
        return f"{self.owner} {self.balance}"


accounts = [Account("alice", 100), Account("bob", 50)]


def main():
    parser = argparse.ArgumentParser(description="run the bank until Ctrl-C")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds per round")
    interval = parser.parse_args().interval
    rounds = 0
    try:
        while True:
            rounds += 1
            if rounds % 4 == 0:
                accounts.append(Account(f"client{len(accounts)}"))
            for account in accounts:
                account.balance += 1
            print(f"round {rounds}: " + ", ".join(a.describe() for a in accounts), flush=True)
            staticUpdatePoint("between rounds")
            time.sleep(interval)
    except KeyboardInterrupt:
        print(f"stopped after {rounds} rounds with {len(accounts)} accounts", flush=True)


if __name__ == "__main__":
    main()
