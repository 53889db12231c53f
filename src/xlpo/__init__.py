"""xlpo: multilingual preference optimization (CAPO, ICR, DPO, SimPO, KTO) with per-language analysis.

The API lives in the submodules (xlpo.train, xlpo.eval, xlpo.icr, ...); `import xlpo` loads nothing else.
"""

__version__ = "0.1.0"
