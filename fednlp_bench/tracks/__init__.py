"""Packaged benchmark tracks (``<name>.yaml``) and their tuned parameters (``tuned/<track>/<algorithm>.json``).

Read them with :func:`fednlp_bench.track.load` and :func:`fednlp_bench.tuning.read_tuned`.
"""
