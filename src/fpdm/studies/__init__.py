"""The reproduction studies: the digits study, the paper-ratio study, the longer-training study."""
