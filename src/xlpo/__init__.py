"""xlpo: multilingual preference optimization (CAPO, ICR, DPO, SimPO, KTO) with per-language analysis.

The public API is re-exported lazily from the submodules so that `import xlpo` stays cheap.
"""

__version__ = "0.1.0"
