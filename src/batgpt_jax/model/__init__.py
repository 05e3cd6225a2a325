"""The BatGPT decoder: config, layers and the scanned transformer stack."""
