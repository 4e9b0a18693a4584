"""Provider adapters, one module per wire format."""
