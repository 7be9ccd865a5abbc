"""FedDyn (Acar et al., ICLR 2021) for fednlp-bench, registered as ``feddyn``."""
from fednlp_feddyn.feddyn import FedDyn, FedDynHParams

__all__ = ["FedDyn", "FedDynHParams"]
