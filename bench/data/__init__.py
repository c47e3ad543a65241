"""Dataset readers for the official FashionIQ / CIRR layouts and the synthetic benchmark."""
