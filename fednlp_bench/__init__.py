"""fednlp-bench: federated learning benchmark suite for NLP (successor of FedNLP)."""
__version__ = "0.1.0"
