"""Generated protobuf code of the wallet API."""
