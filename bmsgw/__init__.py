"""bmsgw: a gateway from lithium battery BMS hardware to solar/hybrid inverters."""

__version__ = "0.1.0"
