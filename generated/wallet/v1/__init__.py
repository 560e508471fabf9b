"""Generated code of package wallet.v1 (run `make proto`)."""
